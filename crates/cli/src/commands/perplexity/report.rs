//! What `frugal perplexity --kl-divergence` prints, in llama.cpp's words and number formats, so
//! that the two outputs can be read side by side (and parsed by the same scripts).

use super::stats::{median, percentile, KlStats};
use std::fmt::Write;

/// The header of the per-chunk table.
pub const CHUNK_HEADER: &str = "chunk             PPL               ln(PPL(Q)/PPL(base))          \
                                KL Divergence              Δp RMS            Same top p";

/// One row of the per-chunk table: the running figures after chunk `chunk` (1-based).
pub fn chunk_row(chunk: usize, k: &KlStats) -> String {
    let (log_ppl, dlog_ppl) = k.log_ppl();
    let ppl = log_ppl.exp();
    let (ratio, dratio) = k.log_ppl_ratio();
    let (kld, dkld) = k.kld();
    let (rms, drms) = k.p_diff_rms();
    let (top, dtop) = k.same_top();
    format!(
        "{chunk:4}    {ppl:9.4} ± {:9.4}    {ratio:10.5} ± {dratio:10.5}    {kld:10.5} ± {dkld:10.5}    \
         {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
        ppl * dlog_ppl,
        100.0 * rms,
        100.0 * drms,
        100.0 * top,
        100.0 * dtop
    )
}

/// The final statistics; `None` under 100 positions, where llama.cpp prints none either.
pub fn summary(k: &KlStats) -> Option<String> {
    if k.count < 100 {
        return None;
    }
    let mut kld = k.kld_values.clone();
    let mut p_diff = k.p_diff_values.clone();
    kld.sort_by(f32::total_cmp);
    p_diff.sort_by(f32::total_cmp);
    let mut s = String::new();
    perplexity_section(&mut s, k);
    kld_section(&mut s, k, &kld);
    p_diff_section(&mut s, k, &p_diff);
    Some(s)
}

fn perplexity_section(s: &mut String, k: &KlStats) {
    let (log_ppl, dlog_ppl) = k.log_ppl();
    let (log_base, dlog_base) = k.log_ppl_base();
    let (ppl, base) = (log_ppl.exp(), log_base.exp());
    let (dppl, dbase) = (ppl * dlog_ppl, base * dlog_base);
    let cov = k.log_ppl_cov();
    let (ratio, dratio) = k.log_ppl_ratio();
    let ppl_cov = ppl * base * cov;
    let _ = writeln!(s, "====== Perplexity statistics ======");
    let _ = writeln!(
        s,
        "Mean PPL(Q)                   : {ppl:10.6} ± {dppl:10.6}"
    );
    let _ = writeln!(
        s,
        "Mean PPL(base)                : {base:10.6} ± {dbase:10.6}"
    );
    let _ = writeln!(
        s,
        "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
        100.0 * cov / (dlog_ppl * dlog_base)
    );
    let _ = writeln!(
        s,
        "Mean ln(PPL(Q)/PPL(base))     : {ratio:10.6} ± {dratio:10.6}"
    );
    let _ = writeln!(
        s,
        "Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}",
        ratio.exp(),
        ratio.exp() * dratio
    );
    let _ = writeln!(
        s,
        "Mean PPL(Q)-PPL(base)         : {:10.6} ± {:10.6}",
        ppl - base,
        (dppl * dppl + dbase * dbase - 2.0 * ppl_cov).sqrt()
    );
    let _ = writeln!(s);
}

fn kld_section(s: &mut String, k: &KlStats, sorted: &[f32]) {
    let (kld, dkld) = k.kld();
    let _ = writeln!(s, "====== KL divergence statistics ======");
    let _ = writeln!(s, "Mean    KLD: {kld:10.6} ± {dkld:10.6}");
    let _ = writeln!(s, "Maximum KLD: {:10.6}", sorted[sorted.len() - 1]);
    for (label, f) in [("99.9%", 0.999), ("99.0%", 0.990), ("95.0%", 0.950)] {
        let _ = writeln!(s, "{label}   KLD: {:10.6}", percentile(sorted, f));
    }
    let _ = writeln!(s, "90.0%   KLD: {:10.6}", percentile(sorted, 0.900));
    let _ = writeln!(s, "Median  KLD: {:10.6}", median(sorted));
    for (label, f) in [("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010)] {
        let _ = writeln!(s, "{label}   KLD: {:10.6}", percentile(sorted, f));
    }
    let _ = writeln!(s, " 0.1%   KLD: {:10.6}", percentile(sorted, 0.001));
    let _ = writeln!(s, "Minimum KLD: {:10.6}", sorted[0]);
    let _ = writeln!(s);
}

fn p_diff_section(s: &mut String, k: &KlStats, sorted: &[f32]) {
    let pct = |x: f32| 100.0 * f64::from(x);
    let (mean, dmean) = super::stats::mean_and_uncertainty(k.sum_p_diff, k.sum_p_diff2, k.count);
    let _ = writeln!(s, "====== Token probability statistics ======");
    let _ = writeln!(
        s,
        "Mean    Δp: {:6.3} ± {:5.3} %",
        100.0 * mean,
        100.0 * dmean
    );
    let _ = writeln!(s, "Maximum Δp: {:6.3}%", pct(sorted[sorted.len() - 1]));
    let upper = [
        ("99.9%", 0.999),
        ("99.0%", 0.990),
        ("95.0%", 0.950),
        ("90.0%", 0.900),
    ];
    for (label, f) in upper.into_iter().chain([("75.0%", 0.750)]) {
        let _ = writeln!(s, "{label}   Δp: {:6.3}%", pct(percentile(sorted, f)));
    }
    let _ = writeln!(s, "Median  Δp: {:6.3}%", pct(median(sorted)));
    let lower = [
        ("25.0%", 0.250),
        ("10.0%", 0.100),
        (" 5.0%", 0.050),
        (" 1.0%", 0.010),
    ];
    for (label, f) in lower.into_iter().chain([(" 0.1%", 0.001)]) {
        let _ = writeln!(s, "{label}   Δp: {:6.3}%", pct(percentile(sorted, f)));
    }
    let _ = writeln!(s, "Minimum Δp: {:6.3}%", pct(sorted[0]));
    let (rms, drms) = k.p_diff_rms();
    let _ = writeln!(
        s,
        "RMS Δp    : {:6.3} ± {:5.3} %",
        100.0 * rms,
        100.0 * drms
    );
    let (top, dtop) = k.same_top();
    let _ = writeln!(
        s,
        "Same top p: {:6.3} ± {:5.3} %",
        100.0 * top,
        100.0 * dtop
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::perplexity::stats::{KlSample, QuantRow};

    fn stats(n: usize) -> KlStats {
        let mut k = KlStats::default();
        for i in 0..n {
            let (base, _) = QuantRow::new(&[0.0, 0.0, -1.0], 1);
            let x = 0.1 * (i % 7) as f32;
            k.add(&KlSample::new(&[x, 0.0, -1.0], &base, 1));
        }
        k
    }

    #[test]
    fn chunk_rows_line_up_with_the_header() {
        let row = chunk_row(3, &stats(63));
        assert!(row.starts_with("   3    "), "{row}");
        assert_eq!(row.matches('±').count(), 5, "{row}");
        assert!(row.ends_with(" %"), "{row}");
    }

    #[test]
    fn summary_needs_100_positions_and_has_llama_cpp_labels() {
        assert_eq!(summary(&stats(99)), None);
        let s = summary(&stats(200)).unwrap();
        for label in [
            "Mean PPL(Q)/PPL(base)         : ",
            "Mean    KLD: ",
            "Median  KLD: ",
            "99.0%   KLD: ",
            "RMS Δp    : ",
            "Same top p: 100.000 ± 0.000 %",
        ] {
            assert!(s.contains(label), "{label} missing from\n{s}");
        }
    }
}

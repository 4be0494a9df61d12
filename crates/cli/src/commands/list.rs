//! `frugal list`: the models in the Hugging Face cache — repository, revision, file, size and
//! quant type (the file name's tag, else the GGUF's `general.file_type`).

use anyhow::Result;
use frugal_hub::inventory::{self, CachedModel};
use frugal_hub::Cache;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let cache = Cache::from_env();
    let mut models = inventory::list(&cache);
    for m in &mut models {
        if m.quant.is_none() && !m.file.is_empty() {
            m.quant = gguf_file_type(&m.path);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&models)?);
        return Ok(());
    }
    if models.is_empty() {
        eprintln!("no models in {}", cache.root().display());
        return Ok(());
    }
    print_table(&models);
    Ok(())
}

fn print_table(models: &[CachedModel]) {
    let rows: Vec<[String; 5]> = models
        .iter()
        .map(|m| {
            let revision = if m.revisions.is_empty() {
                m.commit[..m.commit.len().min(12)].to_string()
            } else {
                m.revisions.join(",")
            };
            let file = match (m.file.as_str(), m.files) {
                ("", n) => format!("(checkpoint, {n} files)"),
                (f, 1) => f.to_string(),
                (f, n) => format!("{f} (+{} parts)", n - 1),
            };
            let quant = m.quant.clone().unwrap_or_else(|| "-".into());
            [m.repo.clone(), revision, file, human_size(m.size), quant]
        })
        .collect();
    let header = ["REPOSITORY", "REVISION", "FILE", "SIZE", "QUANT"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// The quant a GGUF's `general.file_type` names (llama.cpp's `llama_ftype`).
fn gguf_file_type(path: &std::path::Path) -> Option<String> {
    let gguf = frugal_formats::GgufFile::open(path).ok()?;
    let id = gguf.opt_u32("general.file_type").ok()??;
    const NAMES: &[(u32, &str)] = &[
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (7, "Q8_0"),
        (8, "Q5_0"),
        (9, "Q5_1"),
        (10, "Q2_K"),
        (11, "Q3_K_S"),
        (12, "Q3_K_M"),
        (13, "Q3_K_L"),
        (14, "Q4_K_S"),
        (15, "Q4_K_M"),
        (16, "Q5_K_S"),
        (17, "Q5_K_M"),
        (18, "Q6_K"),
        (19, "IQ2_XXS"),
        (20, "IQ2_XS"),
        (21, "Q2_K_S"),
        (22, "IQ3_XS"),
        (23, "IQ3_XXS"),
        (24, "IQ1_S"),
        (25, "IQ4_NL"),
        (26, "IQ3_S"),
        (27, "IQ3_M"),
        (28, "IQ2_S"),
        (29, "IQ2_M"),
        (30, "IQ4_XS"),
        (31, "IQ1_M"),
        (32, "BF16"),
        (36, "TQ1_0"),
        (37, "TQ2_0"),
        (38, "MXFP4_MOE"),
    ];
    let name = NAMES.iter().find(|(i, _)| *i == id).map(|(_, n)| *n);
    Some(name.map_or_else(|| format!("file_type {id}"), str::to_string))
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

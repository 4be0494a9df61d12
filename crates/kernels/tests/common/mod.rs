//! What every SIMD test shares: the instruction-set levels it runs, reported.

use frugal_kernels::Isa;

/// The levels this CPU has (scalar first), after printing which ran and which were skipped
/// because the CPU lacks them (seen with `--nocapture`). Iterating over them runs every SIMD level
/// the machine has, so a test that uses this cannot pass on a SIMD CPU without running SIMD code.
pub fn levels(test: &str) -> Vec<Isa> {
    let ran = Isa::available();
    let skipped: Vec<&str> = [Isa::Avx2, Isa::Avx512Vnni]
        .into_iter()
        .filter(|i| !ran.contains(i))
        .map(Isa::name)
        .collect();
    let names: Vec<&str> = ran.iter().map(|i| i.name()).collect();
    println!("{test}: ran {names:?}, skipped (this CPU lacks them) {skipped:?}");
    ran
}

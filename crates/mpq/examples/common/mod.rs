//! Helpers shared by the timing examples (`search_bench`, `limpq_bench`).

/// The value after `name` on the command line, parsed (`None` when absent or unparsable).
pub(crate) fn flag<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

/// The median of `xs` (the upper one for an even count).
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

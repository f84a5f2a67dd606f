//! The figures: each beside its reference and target, printed as a table.

/// One measured figure, as printed and written to `pipeline.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    name: String,
    value: f64,
    unit: String,
    reference: Option<f64>,
    reference_name: Option<String>,
    ratio: Option<f64>,
    target: Option<String>,
}

/// A figure with no reference or target yet.
pub fn figure(name: &str, value: f64, unit: &str) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        reference: None,
        reference_name: None,
        ratio: None,
        target: None,
    }
}

impl Figure {
    /// Beside `reference`, measured in the same run, and the ratio to it.
    pub fn against(mut self, reference_name: &str, reference: f64) -> Figure {
        self.ratio = (reference > 0.0).then(|| self.value / reference);
        self.reference = Some(reference);
        self.reference_name = Some(reference_name.into());
        self
    }

    /// What the figure should be.
    pub fn target(mut self, target: &str) -> Figure {
        self.target = Some(target.into());
        self
    }
}

/// The figures as a table on standard output.
pub fn print_table(figures: &[Figure]) {
    println!();
    println!(
        "{:<44} {:>14} {:<10} {:>12} {:>8}  {:<24} target",
        "figure", "value", "unit", "reference", "ratio", "reference is"
    );
    println!("{}", "-".repeat(130));
    for f in figures {
        let reference = f.reference.map(|r| format!("{r:.1}")).unwrap_or_default();
        let ratio = f.ratio.map(|r| format!("{:.2}", r)).unwrap_or_default();
        println!(
            "{:<44} {:>14.1} {:<10} {:>12} {:>8}  {:<24} {}",
            f.name,
            f.value,
            f.unit,
            reference,
            ratio,
            f.reference_name.clone().unwrap_or_default(),
            f.target.clone().unwrap_or_default()
        );
    }
    println!();
}

/// The `p`th percentile of `sorted` (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

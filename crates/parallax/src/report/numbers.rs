//! Numbers as a reader reads them: times with 3 significant figures in ms or s, memory in
//! whole MiB, counts with thousands separators. Every table, chart and sentence of a report
//! formats through here, so one value reads the same wherever it appears.

use parallax_core::stats::comparison::Metric;

/// Seconds with 3 significant figures, in ms below one second: `12.1 ms`, `0.950 ms`,
/// `15.1 s`, `1,230 s`.
pub(crate) fn seconds(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    // Rounded first, so that 0.9996 s reads `1.00 s`, not `1,000 ms`.
    let rounded = round_significant(value, 3);
    if rounded.abs() < 1.0 {
        format!("{} ms", significant(rounded * 1000.0, 3))
    } else {
        format!("{} s", significant(value, 3))
    }
}

/// A metric's value as every report writes it: accuracy and F1 to 4 decimals, times with 3
/// significant figures, memory in whole MiB.
pub(crate) fn metric_value(metric: Metric, value: f64) -> String {
    match metric {
        Metric::TestAccuracy | Metric::MacroF1 | Metric::WeightedF1 => format!("{value:.4}"),
        Metric::PeakMemory => mebibytes(value),
        Metric::EpochSeconds | Metric::TimeToFirstStep | Metric::TimeToAccuracy => seconds(value),
    }
}

/// Bytes as whole MiB with thousands separators: `1,234 MiB`.
pub(crate) fn mebibytes(bytes: f64) -> String {
    format!("{} MiB", whole(bytes / (1024.0 * 1024.0)))
}

/// A non-negative quantity rounded to a whole number, with thousands separators: `131,927`.
pub(crate) fn whole(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    let rounded = value.round();
    let sign = if rounded < 0.0 { "−" } else { "" };
    format!("{sign}{}", thousands(rounded.abs() as u64))
}

/// `value` rounded to `digits` significant figures, with thousands separators and no exponent:
/// `0.0121`, `12.1`, `121`, `1,210`.
pub(crate) fn significant(value: f64, digits: u32) -> String {
    if value == 0.0 || !value.is_finite() {
        return if value == 0.0 {
            "0".into()
        } else {
            "—".into()
        };
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
    let rounded = round_significant(value, digits);
    // Rounding can carry into the next power of ten (9.996 → 10.0): one decimal fewer.
    let decimals = if rounded.abs() >= 10f64.powi(magnitude + 1) && decimals > 0 {
        decimals - 1
    } else {
        decimals
    };
    if decimals > 0 {
        let text = format!("{:.*}", decimals, rounded.abs());
        let (integer, fraction) = text.split_once('.').unwrap_or((&text, ""));
        let integer: u64 = integer.parse().unwrap_or(0);
        let sign = if rounded < 0.0 { "−" } else { "" };
        format!("{sign}{}.{fraction}", thousands(integer))
    } else {
        whole(rounded)
    }
}

/// `value` rounded to `digits` significant figures.
fn round_significant(value: f64, digits: u32) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = value.abs().log10().floor() as i32;
    let factor = 10f64.powi(digits as i32 - 1 - magnitude);
    (value * factor).round() / factor
}

/// An integer with a comma every three digits: `131,927`.
pub(crate) fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_three_significant_figures_in_their_unit() {
        assert_eq!(seconds(0.0121), "12.1 ms");
        assert_eq!(seconds(0.015), "15.0 ms");
        assert_eq!(seconds(0.00095), "0.950 ms");
        assert_eq!(seconds(0.9996), "1.00 s");
        assert_eq!(seconds(15.14), "15.1 s");
        assert_eq!(seconds(9.996), "10.0 s");
        assert_eq!(seconds(151.4), "151 s");
        assert_eq!(seconds(1234.0), "1,230 s");
        assert_eq!(seconds(f64::NAN), "—");
    }

    #[test]
    fn memory_and_counts_read_with_separators() {
        assert_eq!(mebibytes(336.4 * 1024.0 * 1024.0), "336 MiB");
        assert_eq!(mebibytes(1234.6 * 1024.0 * 1024.0), "1,235 MiB");
        assert_eq!(whole(131_927.2), "131,927");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(significant(-0.012345, 3), "−0.0123");
    }
}

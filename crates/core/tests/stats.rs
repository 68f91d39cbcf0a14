//! Core's statistics against scipy and statsmodels: `fixtures/stats/expected.json`, written
//! once by `fixtures/stats/make_expected.py`, holds their values on fixed inputs, and every
//! statistic must match to 1e-9.

use std::path::PathBuf;

use parallax_core::stats::{Interval, Scale, describe, holm, paired, t_quantile, two_sided_p};
use serde_json::Value;

/// How far core may be from scipy and statsmodels. The references are written at full f64
/// precision (Python's round-trip `repr`), so the printing adds nothing. What separates the two
/// sides is f64 arithmetic in other orders (numpy's pairwise sums, another libm's `log`): a few
/// ulps on at most 12 values, about 1e-15 relative, since both sides form the paired
/// differences by the same correctly rounded subtraction; and the special functions: statrs's
/// incomplete beta runs its continued fraction to f64 precision and its AS 109 inverse stops
/// once a Newton step is below 1e-13, while Boost's (scipy's) are good to about 1e-15. 1e-9 is
/// ten thousand times that. An N where N − 1 belongs (4% or more of an sd for these N ≤ 12), a
/// one-sided p for a two-sided one (a factor 2), a wrong df (t₀.₉₇₅ is 4.30 for df 2 and 3.18
/// for df 3) or a Holm multiplier off by one all miss by far more. The absolute floor for
/// values up to 1 is blind below 1e-9, though: a p of 7e-19 off by a factor of 2 passes.
const TOLERANCE: f64 = 1e-9;

fn expected() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/stats/expected.json");
    let text = std::fs::read_to_string(&path).expect("fixtures/stats/expected.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|number| number.as_f64().expect("a number"))
        .collect()
}

/// Equal to 1e-9, absolutely for values up to 1 and relatively above.
fn close(what: &str, actual: f64, expected: f64) {
    let scale = expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= TOLERANCE * scale,
        "{what}: {actual} against scipy's {expected}"
    );
}

#[test]
fn paired_statistics_match_scipy_and_statsmodels() {
    let fixture = expected();
    let cases = fixture["paired"].as_array().unwrap();
    assert!(cases.len() >= 14);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let scale = match case["scale"].as_str().unwrap() {
            "difference" => Scale::Difference,
            "log_ratio" => Scale::LogRatio,
            other => panic!("unknown scale {other}"),
        };
        let (a, b) = (numbers(&case["a"]), numbers(&case["b"]));
        let differences: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| scale.paired_value(*x, *y).unwrap())
            .collect();
        let margin = numbers(&case["margin"]);
        let margin = Interval {
            low: margin[0],
            high: margin[1],
        };
        let got = paired(&differences, margin).unwrap();
        let want = &case["expected"];
        let field = |key: &str| want[key].as_f64().unwrap();
        assert_eq!(got.n as u64, want["n"].as_u64().unwrap(), "{name}");
        assert_eq!(got.df as u64, want["df"].as_u64().unwrap(), "{name}");
        close(&format!("{name}: mean"), got.mean, field("mean"));
        close(&format!("{name}: sd"), got.sd, field("sd"));
        close(&format!("{name}: t"), got.t, field("t"));
        close(&format!("{name}: p_t"), got.p_t, field("p_t"));
        for (key, interval) in [("ci95", got.ci95), ("ci90", got.ci90)] {
            let bounds = numbers(&want[key]);
            close(&format!("{name}: {key} low"), interval.low, bounds[0]);
            close(&format!("{name}: {key} high"), interval.high, bounds[1]);
        }
        match want["p_sign_flip"].as_f64() {
            Some(p) => close(&format!("{name}: sign flip"), got.p_sign_flip.unwrap(), p),
            None => assert_eq!(got.p_sign_flip, None, "{name}"),
        }
        close(&format!("{name}: TOST"), got.p_tost, field("p_tost"));
        assert_eq!(
            [got.wins_a, got.wins_b, got.ties].map(|count| count as u64),
            ["wins_a", "wins_b", "ties"].map(|key| want[key].as_u64().unwrap()),
            "{name}"
        );
    }
}

#[test]
fn holm_matches_statsmodels() {
    for case in expected()["holm"].as_array().unwrap() {
        let got = holm(&numbers(&case["p"]));
        for (index, (got, want)) in got.iter().zip(numbers(&case["adjusted"])).enumerate() {
            close(&format!("holm {case} [{index}]"), *got, want);
        }
    }
}

#[test]
fn descriptives_match_numpy_and_scipy() {
    for case in expected()["describe"].as_array().unwrap() {
        let values = numbers(&case["values"]);
        let got = describe(&values).unwrap();
        close("mean", got.mean, case["mean"].as_f64().unwrap());
        close("sd", got.sd.unwrap(), case["sd"].as_f64().unwrap());
        close("min", got.min, case["min"].as_f64().unwrap());
        close("max", got.max, case["max"].as_f64().unwrap());
        close("iqm", got.interquartile_mean, case["iqm"].as_f64().unwrap());
        match case["olympic_mean"].as_f64() {
            Some(want) => close("olympic", got.olympic_mean.unwrap(), want),
            None => assert_eq!(got.olympic_mean, None),
        }
    }
}

#[test]
fn students_t_matches_scipy() {
    let fixture = expected();
    for case in fixture["t_quantile"].as_array().unwrap() {
        let df = case["df"].as_u64().unwrap() as usize;
        let p = case["p"].as_f64().unwrap();
        close(
            &format!("t quantile {p} df {df}"),
            t_quantile(p, df),
            case["value"].as_f64().unwrap(),
        );
    }
    for case in fixture["t_sf"].as_array().unwrap() {
        let df = case["df"].as_u64().unwrap() as usize;
        let t = case["t"].as_f64().unwrap();
        close(
            &format!("two-sided p of t {t} df {df}"),
            two_sided_p(t, df),
            case["two_sided_p"].as_f64().unwrap(),
        );
    }
}

//! Floats in JSON that read back as they were written, NaN and infinities included.
//!
//! JSON has no literal for NaN or ±∞, and `serde_json` writes them as `null`, which then fails
//! to read back as a number: one diverged loss made a whole record unreadable. The records use
//! [`f64`] through `#[serde(with = "crate::float")]` (and [`f32`] through `crate::float::f32`):
//! a finite value is a plain JSON number, a non-finite one the string `"NaN"`, `"Infinity"` or
//! `"-Infinity"` (the names JavaScript and Python's `json` module use). Reading also takes
//! `null` as NaN, which is what records written before this encoding hold.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// The text of a non-finite value, or `None` for a finite one.
fn non_finite_text(value: f64) -> Option<&'static str> {
    if value.is_nan() {
        Some("NaN")
    } else if value == f64::INFINITY {
        Some("Infinity")
    } else if value == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// Writes `value` as a JSON number, or as its name when it is not finite.
pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    match non_finite_text(*value) {
        Some(text) => serializer.serialize_str(text),
        None => serializer.serialize_f64(*value),
    }
}

/// Reads a number, one of the names [`serialize`] writes, or `null` (NaN).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    deserializer.deserialize_any(FloatVisitor)
}

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = f64;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
        Ok(value)
    }

    // JSON integers (`0`, `3`) are floats too.
    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
        Ok(value as f64)
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<f64, E> {
        match text {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }

    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
}

/// The same encoding for [`f32`] values (a step's loss in the progress events).
pub mod f32 {
    use serde::{Deserializer, Serializer};

    /// Writes `value` as [`super::serialize`] writes its `f64`.
    pub fn serialize<S: Serializer>(value: &f32, serializer: S) -> Result<S::Ok, S::Error> {
        super::serialize(&f64::from(*value), serializer)
    }

    /// Reads what [`serialize`] writes.
    #[allow(clippy::cast_possible_truncation)]
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f32, D::Error> {
        super::deserialize(deserializer).map(|value| value as f32)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Holder {
        #[serde(with = "crate::float")]
        value: f64,
    }

    fn round_trip(value: f64) -> (String, f64) {
        let text = serde_json::to_string(&Holder { value }).unwrap();
        let back: Holder = serde_json::from_str(&text).unwrap();
        (text, back.value)
    }

    #[test]
    fn every_float_reads_back_as_it_was_written() {
        for value in [0.0, -0.0, 1.5, -2.25e-300, f64::MAX, f64::MIN_POSITIVE] {
            let (text, back) = round_trip(value);
            assert_eq!(back.to_bits(), value.to_bits(), "{text}");
        }
        assert_eq!(round_trip(f64::NAN).0, r#"{"value":"NaN"}"#);
        assert!(round_trip(f64::NAN).1.is_nan());
        assert_eq!(
            round_trip(f64::INFINITY),
            (r#"{"value":"Infinity"}"#.into(), f64::INFINITY)
        );
        assert_eq!(
            round_trip(f64::NEG_INFINITY),
            (r#"{"value":"-Infinity"}"#.into(), f64::NEG_INFINITY)
        );
    }

    #[test]
    fn null_from_older_records_reads_as_nan_and_other_text_is_refused() {
        let old: Holder = serde_json::from_str(r#"{"value":null}"#).unwrap();
        assert!(old.value.is_nan());
        let integer: Holder = serde_json::from_str(r#"{"value":3}"#).unwrap();
        assert_eq!(integer.value, 3.0);
        let error = serde_json::from_str::<Holder>(r#"{"value":"nan"}"#).unwrap_err();
        assert!(error.to_string().contains("\"Infinity\""), "{error}");
    }
}

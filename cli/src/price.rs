//! `--price-per-gib-month`: what stored bytes cost a month, for `stats`, `estimate` and `ui`.
//!
//! The price is in whatever currency the user has in mind; reports print the number only.

use clap::Args;
use serde_json::Value;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Args, Debug, Clone, Copy, Default)]
pub struct PriceArgs {
    /// Price of storing one GiB for a month (e.g. 0.023); adds monthly costs to the report.
    #[arg(long, value_name = "PRICE", value_parser = parse_price)]
    pub price_per_gib_month: Option<f64>,
}

/// A price must be a finite number, zero or more.
pub fn parse_price(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!(
            "{s:?} is not a price: give a number of zero or more, e.g. 0.023"
        )),
    }
}

/// The monthly cost of `bytes` at `price` per GiB-month.
pub fn monthly_cost(bytes: u64, price: f64) -> f64 {
    bytes as f64 / GIB * price
}

/// A cost for people: two decimals, more for amounts under one unit.
pub fn money(v: f64) -> String {
    if v != 0.0 && v.abs() < 1.0 {
        format!("{v:.4}")
    } else {
        format!("{v:.2}")
    }
}

/// Add `price_per_gib_month` and `monthly_cost` (of `bytes`) to a JSON object.
pub fn add_cost(value: &mut Value, bytes: u64, price: f64) {
    if let Value::Object(map) = value {
        map.insert("price_per_gib_month".into(), price.into());
        map.insert("monthly_cost".into(), monthly_cost(bytes, price).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs() {
        assert_eq!(monthly_cost(1 << 30, 0.023), 0.023);
        assert_eq!(monthly_cost(3 << 29, 2.0), 3.0);
        assert_eq!(money(0.023), "0.0230");
        assert_eq!(money(12.5), "12.50");
        assert!(parse_price("-1").is_err());
        assert!(parse_price("NaN").is_err());
        assert!(parse_price("abc").is_err());
        assert_eq!(parse_price("0"), Ok(0.0));
    }
}

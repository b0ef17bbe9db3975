//! Lookup tables for enrichment: a device's location, its own threshold, the registry of
//! devices a heartbeat rule expects.
//!
//! A table maps a key (first CSV column, or a TOML table name) to a row of named values.
//! Parsing is pure; the agent reads the files. Rules read tables with `lookup(...)`.

use rhai::{Dynamic, Map};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A table could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table `{table}`: {message}")]
pub struct TableError {
    pub table: String,
    pub message: String,
}

/// One lookup table. Rows are kept in key order, so iteration is deterministic.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: BTreeMap<String, Map>,
}

impl Table {
    /// A CSV table with a header line; the first column is the key. Cells that parse as
    /// numbers or `true`/`false` become numbers and bools.
    pub fn from_csv(name: &str, text: &str) -> Result<Table, TableError> {
        let err = |message: String| TableError { table: name.to_owned(), message };
        let mut reader =
            csv::ReaderBuilder::new().trim(csv::Trim::All).comment(Some(b'#')).from_reader(text.as_bytes());
        let headers: Vec<String> =
            reader.headers().map_err(|e| err(e.to_string()))?.iter().map(str::to_owned).collect();
        if headers.is_empty() || headers[0].is_empty() {
            return Err(err("the first line must name the columns; the first column is the key".into()));
        }
        let mut rows = BTreeMap::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| err(format!("row {}: {e}", i + 2)))?;
            let Some(key) = record.get(0).filter(|k| !k.is_empty()) else {
                return Err(err(format!("row {}: empty key", i + 2)));
            };
            let mut row = Map::new();
            for (h, cell) in headers.iter().zip(record.iter()) {
                row.insert(h.as_str().into(), cell_value(cell));
            }
            if rows.insert(key.to_owned(), row).is_some() {
                return Err(err(format!("row {}: key `{key}` appears twice", i + 2)));
            }
        }
        Ok(Table { rows })
    }

    /// A TOML table: each top-level table is a row, named by its key.
    /// `["t-001"]\nthreshold = 3.3` is the row `t-001` with `threshold = 3.3`.
    pub fn from_toml(name: &str, text: &str) -> Result<Table, TableError> {
        let err = |message: String| TableError { table: name.to_owned(), message };
        let value: toml::Table = text.parse().map_err(|e: toml::de::Error| err(e.to_string()))?;
        let mut rows = BTreeMap::new();
        for (key, v) in value {
            let toml::Value::Table(t) = v else {
                return Err(err(format!("`{key}` must be a table of values, like [\"{key}\"]")));
            };
            let json = serde_json::to_value(&t).map_err(|e| err(e.to_string()))?;
            let row: Dynamic = serde_json::from_value(json).map_err(|e| err(e.to_string()))?;
            let mut row: Map = row.try_cast::<Map>().unwrap_or_default();
            row.entry("key".into()).or_insert_with(|| key.clone().into());
            rows.insert(key, row);
        }
        Ok(Table { rows })
    }

    /// The row for `key`.
    pub fn get(&self, key: &str) -> Option<&Map> {
        self.rows.get(key)
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.rows.keys().map(String::as_str)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No rows?
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn cell_value(cell: &str) -> Dynamic {
    if let Ok(i) = cell.parse::<i64>() {
        Dynamic::from_int(i)
    } else if let Some(f) = cell.parse::<f64>().ok().filter(|f| f.is_finite()) {
        Dynamic::from_float(f)
    } else if cell == "true" || cell == "false" {
        Dynamic::from_bool(cell == "true")
    } else {
        Dynamic::from(cell.to_owned())
    }
}

/// All tables, by name.
pub type Tables = BTreeMap<String, Arc<Table>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_with_typed_cells() {
        let t = Table::from_csv("devices", "# devices\ndevice, site, battery_min\nb-01, roof, 3.3\nb-02, cellar, 3\n")
            .expect("valid");
        assert_eq!(t.len(), 2);
        let row = t.get("b-01").expect("row");
        assert_eq!(row["site"].to_string(), "roof");
        assert_eq!(row["battery_min"].as_float(), Ok(3.3));
        assert_eq!(t.get("b-02").expect("row")["battery_min"].as_int(), Ok(3));
        assert_eq!(t.keys().collect::<Vec<_>>(), ["b-01", "b-02"]);
    }

    #[test]
    fn csv_errors_are_named() {
        let e = Table::from_csv("d", "k,v\na,1\na,2\n").expect_err("duplicate");
        assert!(e.to_string().contains("row 3") && e.to_string().contains("twice"), "{e}");
        assert!(Table::from_csv("d", "k,v\na,1,extra\n").is_err());
    }

    #[test]
    fn toml_rows() {
        let t = Table::from_toml("d", "[\"t-1\"]\nsite = \"roof\"\ntimeout_ms = 5000\n").expect("valid");
        assert_eq!(t.get("t-1").expect("row")["timeout_ms"].as_int(), Ok(5000));
        assert!(Table::from_toml("d", "x = 1").is_err());
    }
}

//! Parsing LVM's JSON reports (`lvs`/`vgs --reportformat json --units b --nosuffix`): pure
//! functions, tested on output captured from lvm2 2.03.16. Sizes are decimal strings of
//! bytes; an empty string (e.g. `origin` of a plain LV) means "none".

use crate::storage::StorageError;
use serde::Deserialize;

/// One row of `lvs -o lv_name,lv_size,origin,origin_size --units b --nosuffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvRow {
    pub name: String,
    pub size_bytes: u64,
    /// Origin LV of a snapshot.
    pub origin: Option<String>,
    /// Size of the origin (of a snapshot): what a restore must create.
    pub origin_size_bytes: Option<u64>,
}

/// One row of `vgs -o vg_name,vg_size,vg_free,vg_extent_size --units b --nosuffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgRow {
    pub name: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub extent_bytes: u64,
}

#[derive(Deserialize)]
struct Report<T> {
    #[serde(default = "Vec::new")]
    report: Vec<T>,
}

#[derive(Deserialize)]
struct LvSection {
    #[serde(default)]
    lv: Vec<RawLv>,
}

#[derive(Deserialize)]
struct VgSection {
    #[serde(default)]
    vg: Vec<RawVg>,
}

#[derive(Deserialize)]
struct RawLv {
    lv_name: String,
    lv_size: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    origin_size: String,
}

#[derive(Deserialize)]
struct RawVg {
    vg_name: String,
    vg_size: String,
    vg_free: String,
    #[serde(default)]
    vg_extent_size: String,
}

fn bad(what: &str, detail: impl std::fmt::Display) -> StorageError {
    StorageError::Io(format!("unexpected {what} output: {detail}"))
}

/// Bytes from `--units b --nosuffix` (tolerates a trailing `B` and a `.0` fraction in case
/// the options are missing on some version).
fn bytes(what: &str, field: &str, s: &str) -> Result<u64, StorageError> {
    let t = s.trim().trim_end_matches(['B', 'b']);
    let t = t
        .strip_suffix(".00")
        .or_else(|| t.strip_suffix(".0"))
        .unwrap_or(t);
    t.parse::<u64>()
        .map_err(|_| bad(what, format_args!("{field} {s:?} is not a byte count")))
}

fn optional(s: String) -> Option<String> {
    if s.trim().is_empty() { None } else { Some(s) }
}

/// The LVs in an `lvs` JSON report.
pub fn parse_lvs(json: &str) -> Result<Vec<LvRow>, StorageError> {
    let r: Report<LvSection> = serde_json::from_str(json).map_err(|e| bad("lvs", e))?;
    r.report
        .into_iter()
        .flat_map(|s| s.lv)
        .map(|lv| {
            let origin_size_bytes = match optional(lv.origin_size) {
                Some(s) => Some(bytes("lvs", "origin_size", &s)?),
                None => None,
            };
            Ok(LvRow {
                size_bytes: bytes("lvs", "lv_size", &lv.lv_size)?,
                name: lv.lv_name,
                origin: optional(lv.origin),
                origin_size_bytes,
            })
        })
        .collect()
}

/// The VGs in a `vgs` JSON report.
pub fn parse_vgs(json: &str) -> Result<Vec<VgRow>, StorageError> {
    let r: Report<VgSection> = serde_json::from_str(json).map_err(|e| bad("vgs", e))?;
    r.report
        .into_iter()
        .flat_map(|s| s.vg)
        .map(|vg| {
            let extent = match optional(vg.vg_extent_size) {
                Some(s) => bytes("vgs", "vg_extent_size", &s)?,
                None => 4 << 20,
            };
            Ok(VgRow {
                size_bytes: bytes("vgs", "vg_size", &vg.vg_size)?,
                free_bytes: bytes("vgs", "vg_free", &vg.vg_free)?,
                extent_bytes: extent.max(512),
                name: vg.vg_name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `lvs --config global{activation=0} --reportformat json
    /// -o lv_name,lv_size,origin --units b --nosuffix tcvgx` (lvm2 2.03.16), plus a snapshot
    /// row in the shape lvm2 prints where device-mapper exists.
    const LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"vol-a", "lv_size":"104857600", "origin":""},
                  {"lv_name":"vol-b", "lv_size":"209715200", "origin":"", "origin_size":""},
                  {"lv_name":"snap-b", "lv_size":"41943040", "origin":"vol-b", "origin_size":"209715200"}
              ]
          }
      ]
  }
"#;

    const VGS: &str = r#"  {
      "report": [
          {
              "vg": [
                  {"vg_name":"tcvgx", "vg_size":"1069547520", "vg_free":"859832320", "vg_extent_size":"4194304"}
              ]
          }
      ]
  }
"#;

    #[test]
    fn parses_lvs() {
        let rows = parse_lvs(LVS).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            LvRow {
                name: "vol-a".into(),
                size_bytes: 104_857_600,
                origin: None,
                origin_size_bytes: None
            }
        );
        assert_eq!(rows[2].origin.as_deref(), Some("vol-b"));
        assert_eq!(rows[2].origin_size_bytes, Some(209_715_200));
        assert!(parse_lvs(r#"{"report":[{"lv":[]}]}"#).unwrap().is_empty());
        assert!(parse_lvs(r#"{"report":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn parses_vgs() {
        let rows = parse_vgs(VGS).unwrap();
        assert_eq!(
            rows,
            vec![VgRow {
                name: "tcvgx".into(),
                size_bytes: 1_069_547_520,
                free_bytes: 859_832_320,
                extent_bytes: 4_194_304
            }]
        );
        let tolerant = r#"{"report":[{"vg":[{"vg_name":"v","vg_size":"8.00B","vg_free":"0B"}]}]}"#;
        let rows = parse_vgs(tolerant).unwrap();
        assert_eq!((rows[0].size_bytes, rows[0].free_bytes), (8, 0));
        assert_eq!(rows[0].extent_bytes, 4 << 20);
    }

    #[test]
    fn rejects_malformed_reports() {
        for bad in [
            "",
            "not json",
            r#"{"report":[{"lv":[{"lv_name":"x","lv_size":"12m"}]}]}"#,
            r#"{"report":[{"lv":[{"lv_name":"x","lv_size":"-1"}]}]}"#,
            r#"{"report":[{"lv":[{"lv_size":"1"}]}]}"#,
        ] {
            assert!(
                matches!(parse_lvs(bad), Err(StorageError::Io(_))),
                "{bad:?}"
            );
        }
        assert!(
            parse_vgs(r#"{"report":[{"vg":[{"vg_name":"v","vg_size":"x","vg_free":"1"}]}]}"#)
                .is_err()
        );
    }
}

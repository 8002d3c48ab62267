//! The search's state file, `DIR/search-state.json`, written atomically after every iteration: the
//! progress (iterations done, the next population, every subnet scored, in order) and the identity of the
//! search (space, checkpoint digest, data, settings, predictor). No generator state is stored: iteration
//! i draws from a generator seeded by (seed, i). `--resume` continues only a state whose identity equals
//! the current one, and otherwise names each entry that differs; `iterations` is not part of the
//! identity, so a finished search can be extended.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::evolution::SearchProgress;
use crate::error::{Error, Result};
use crate::util::atomic::write_atomic;

/// The format tag of the state file.
pub const FORMAT: &str = "attnas-search-state/1";

/// The file's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchState {
    pub format: String,
    /// What the search is bound to, by name (`space`, `checkpoint`, `data`, `settings`, `predictor`).
    pub identity: BTreeMap<String, Value>,
    #[serde(flatten)]
    pub progress: SearchProgress,
}

/// `DIR/search-state.json`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("search-state.json")
}

/// Reads a state file; errors name the file.
pub fn load(path: &Path) -> Result<SearchState> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let state: SearchState = serde_json::from_str(&text).map_err(|e| Error::input(path, e.line(), e.to_string()))?;
    if state.format != FORMAT {
        return Err(Error::input(path, 0, format!("format '{}', expected '{FORMAT}'", state.format)));
    }
    Ok(state)
}

/// Writes the state atomically (a reader sees the previous iteration's file or this one).
pub fn save(path: &Path, state: &SearchState) -> Result<()> {
    let text = serde_json::to_string(state).map_err(|e| Error::Other(format!("search state: {e}")))?;
    write_atomic(path, |w| w.write_all(text.as_bytes()).map_err(|e| Error::io(path, e)))
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

/// The entries of `now` that differ from `stored`, one line each (`settings.population: 8 in the state, 16
/// now`); objects are compared key by key.
pub fn differences(stored: &BTreeMap<String, Value>, now: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = stored.keys().chain(now.keys()).collect();
    for key in keys {
        let (a, b) = (stored.get(key).unwrap_or(&Value::Null), now.get(key).unwrap_or(&Value::Null));
        if a == b {
            continue;
        }
        match (a, b) {
            (Value::Object(ma), Value::Object(mb)) => {
                let sub: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
                for k in sub {
                    let (x, y) = (ma.get(k).unwrap_or(&Value::Null), mb.get(k).unwrap_or(&Value::Null));
                    if x != y {
                        out.push(format!("{key}.{k}: {} in the state, {} now", short(x), short(y)));
                    }
                }
            }
            _ => out.push(format!("{key}: {} in the state, {} now", short(a), short(b))),
        }
    }
    out
}

/// Errors (usage, exit 2) unless `stored` and `now` are the same search, naming what differs.
pub fn check_identity(path: &Path, stored: &BTreeMap<String, Value>, now: &BTreeMap<String, Value>) -> Result<()> {
    let diff = differences(stored, now);
    if diff.is_empty() {
        return Ok(());
    }
    Err(Error::usage(format!(
        "--resume: {} belongs to another search:\n  {}\nresume with the same checkpoint, space, data and settings \
         (only --iterations may change), or search into a new --out folder",
        path.display(),
        diff.join("\n  ")
    )))
}

/// SHA-256 of a file's bytes, hex.
pub fn file_digest(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// SHA-256 of a text, hex (the space's description).
pub fn text_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_changed_entries() {
        let mut a = BTreeMap::new();
        a.insert("checkpoint".to_string(), Value::from("abc"));
        a.insert("settings".to_string(), serde_json::json!({"population": 8, "seed": 0}));
        let mut b = a.clone();
        assert!(differences(&a, &b).is_empty());
        b.insert("settings".to_string(), serde_json::json!({"population": 16, "seed": 0}));
        b.insert("checkpoint".to_string(), Value::from("def"));
        assert_eq!(
            differences(&a, &b),
            vec!["checkpoint: abc in the state, def now", "settings.population: 8 in the state, 16 now"]
        );
        let err = check_identity(Path::new("s.json"), &a, &b).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("settings.population"), "{err}");
    }
}

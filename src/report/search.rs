//! The search part of the report: read from the search's state file (`DIR/search-state.json`), which
//! `attnas search` rewrites atomically after every iteration, so a search in progress can be reported
//! too. The front is the non-dominated set of every subnet scored so far (`search::pareto`), as the
//! search itself reports it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::search::pareto::{pareto_front, Point};
use crate::search::state::{load, state_path, SearchState};
use crate::search::Evaluated;

/// A search folder's progress.
#[derive(Clone, Debug)]
pub struct SearchHistory {
    pub dir: PathBuf,
    pub state: SearchState,
    /// Indices into `state.progress.evaluated` of the front, by ascending MFLOPs.
    pub front: Vec<usize>,
}

impl SearchHistory {
    /// Reads `DIR/search-state.json`; a folder without one is a usage error saying what to pass.
    pub fn load(dir: &Path) -> Result<SearchHistory> {
        let path = state_path(dir);
        if !path.is_file() {
            return Err(Error::usage(format!(
                "--search {}: no search-state.json here; pass the --out folder of an `attnas search`",
                dir.display()
            )));
        }
        let state = load(&path)?;
        let points: Vec<Point> = state.progress.evaluated.iter().map(Evaluated::point).collect();
        let front = pareto_front(&points);
        Ok(SearchHistory { dir: dir.to_path_buf(), state, front })
    }

    pub fn evaluated(&self) -> &[Evaluated] {
        &self.state.progress.evaluated
    }

    pub fn front(&self) -> impl Iterator<Item = &Evaluated> {
        self.front.iter().map(|&i| &self.state.progress.evaluated[i])
    }

    pub fn points(&self) -> Vec<Point> {
        self.evaluated().iter().map(Evaluated::point).collect()
    }
}

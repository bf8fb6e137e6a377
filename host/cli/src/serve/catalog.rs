//! The operators a service serves: every `.wasm` file of one directory,
//! by the name in its metadata. A scan makes a new catalog from the
//! directory and the previous catalog: a file that does not load keeps the
//! version it had (if it had one) serving, and is reported.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use xcs::graph::{ComposeOptions, Composite, Operators};
use xcs::{Error, Host, Operator};

/// One served operator and the file it came from.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    pub(crate) operator: Operator,
    pub(crate) path: PathBuf,
}

/// The operators served at one moment; replaced whole by a scan, so a
/// request sees one consistent set, and keeps the operator it started
/// with while a newer catalog is put in place.
#[derive(Clone, Debug, Default)]
pub(crate) struct Catalog {
    by_name: BTreeMap<String, Served>,
    /// The same operators, for graphs and composites (which call by name).
    operators: Operators,
    /// The composites run so far, by name, with their caches of traces
    /// (they call the operators of this catalog: a reload starts afresh).
    composites: Arc<Mutex<HashMap<String, Composite>>>,
}

/// A file that did not load, and why.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) path: PathBuf,
    pub(crate) error: anyhow::Error,
    /// Whether an earlier version from this file keeps serving.
    pub(crate) kept: Option<String>,
}

impl Catalog {
    /// The operator served as `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Served> {
        self.by_name.get(name)
    }

    /// Every served operator, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Served)> {
        self.by_name
            .iter()
            .map(|(name, served)| (name.as_str(), served))
    }

    /// How many operators are served.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The served operators, keyed by name, for a graph or a composite.
    pub(crate) fn operators(&self) -> &Operators {
        &self.operators
    }

    /// The composite served as `name` (a served composite operator),
    /// calling the operators of this catalog; made once, so that its
    /// traces are cached across requests.
    pub(crate) fn composite(&self, name: &str, operator: &Operator) -> Result<Composite, Error> {
        let mut composites = self
            .composites
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(composite) = composites.get(name) {
            return Ok(composite.clone());
        }
        let composite = Composite::with_options(
            operator.clone(),
            self.operators.clone(),
            ComposeOptions::default(),
        )?;
        composites.insert(name.to_owned(), composite.clone());
        Ok(composite)
    }

    fn insert(&mut self, name: String, served: Served) {
        self.operators.insert(name.clone(), served.operator.clone());
        self.by_name.insert(name, served);
    }

    /// Whether `name` is served from a file other than `path`.
    fn taken_by_other(&self, name: &str, path: &Path) -> Option<&Path> {
        self.by_name
            .get(name)
            .map(|served| served.path.as_path())
            .filter(|other| *other != path)
    }
}

/// The catalog of `dir` now: every `.wasm` file that loads, by metadata
/// name (files in name order; of two with one name, the first is served
/// and the second reported). A file that does not load (half written,
/// corrupt, needing a capability not granted) is reported, and the
/// version `previous` had from it keeps serving.
pub(crate) async fn scan(host: &Host, dir: &Path, previous: &Catalog) -> (Catalog, Vec<Failure>) {
    let mut failures = Vec::new();
    let paths = match wasm_files(dir) {
        Ok(paths) => paths,
        Err(error) => {
            // The directory itself is unreadable: nothing changes.
            failures.push(Failure {
                path: dir.to_owned(),
                error: error.into(),
                kept: None,
            });
            return (previous.clone(), failures);
        }
    };
    let mut catalog = Catalog::default();
    for path in paths {
        match host.load(&path).await {
            Ok(operator) => {
                let name = operator.name().to_owned();
                if let Some(other) = catalog.taken_by_other(&name, &path) {
                    failures.push(Failure {
                        error: anyhow::anyhow!(
                            "an operator named `{name}` is already served from {}",
                            other.display()
                        ),
                        path,
                        kept: None,
                    });
                    continue;
                }
                catalog.insert(name, Served { operator, path });
            }
            Err(error) => {
                let kept = previous
                    .iter()
                    .find(|(name, served)| {
                        served.path == path && catalog.taken_by_other(name, &path).is_none()
                    })
                    .map(|(name, served)| (name.to_owned(), served.clone()));
                let kept = kept.map(|(name, served)| {
                    catalog.insert(name.clone(), served);
                    name
                });
                failures.push(Failure {
                    path,
                    error: error.into(),
                    kept,
                });
            }
        }
    }
    (catalog, failures)
}

/// The `.wasm` files directly in `dir`, sorted.
fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::io(dir, source))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm") && path.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

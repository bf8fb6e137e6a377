//! What an operator may reach beyond its sandbox: read-only directories
//! and named environment variables. Nothing is granted unless a grant
//! names it.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Grants for an operator's calls: host directories it may read (each at a
/// guest path, read-only) and environment variables it sees (by name, with
/// their values read once, when the host is built). Without grants an
/// operator sees no file and no environment.
///
/// Give them to every operator with
/// [`HostBuilder::grants`](crate::HostBuilder::grants), to one more by
/// name or digest with
/// [`HostBuilder::grants_for`](crate::HostBuilder::grants_for), or from a
/// grants file with [`GrantsTable`].
/// Calls of an operator with grants are never answered by the result
/// cache nor merged with identical calls: what a file or a variable holds
/// is not part of the input.
///
/// ```no_run
/// let grants = xcs::Grants::new()
///     .read_dir("/srv/prompts", "/prompts")
///     .env("API_KEY");
/// let host = xcs::Host::builder().grants_for("summarize", grants).build()?;
/// # drop(host);
/// # Ok::<(), xcs::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Grants {
    pub(crate) dirs: Vec<DirGrant>,
    pub(crate) env: Vec<(String, String)>,
    /// Variables whose values are read from this process's environment
    /// when the host is built.
    pub(crate) from_host: Vec<String>,
}

/// Variables by name only: their values (API keys) stay out of logs and
/// assertion messages.
impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("dirs", &self.dirs)
            .field("env", &self.env_names().collect::<Vec<_>>())
            .finish()
    }
}

/// A host directory the guest may read at `guest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DirGrant {
    pub(crate) host: PathBuf,
    pub(crate) guest: String,
}

impl Grants {
    /// No grants: what every operator has by default.
    pub fn new() -> Grants {
        Grants::default()
    }

    /// The host directory `host`, readable by the guest at the absolute
    /// path `guest` (e.g. `/data`): its files and subdirectories, read-only;
    /// nothing outside it (`..` and symbolic links that lead out fail).
    /// Checked when the host is built: `host` must be a directory, `guest`
    /// absolute and granted once.
    pub fn read_dir(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Grants {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
        });
        self
    }

    /// The environment variable `name`, with the value it has in this
    /// process when the host is built (a `config` error then if it is not
    /// set, or not UTF-8).
    pub fn env(mut self, name: impl Into<String>) -> Grants {
        let name = name.into();
        self.env.retain(|(existing, _)| *existing != name);
        if !self.from_host.contains(&name) {
            self.from_host.push(name);
        }
        self
    }

    /// These grants with the variables of [`env`](Self::env) given the
    /// values they have in this process now.
    pub(crate) fn resolved(mut self) -> Result<Grants, Error> {
        for name in std::mem::take(&mut self.from_host) {
            let value = match std::env::var(&name) {
                Ok(value) => value,
                // Not the error's own words: `NotUnicode` quotes the value.
                Err(std::env::VarError::NotPresent) => {
                    return Err(Error::Config {
                        message: format!("the granted environment variable `{name}` is not set"),
                    });
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::Config {
                        message: format!("the granted environment variable `{name}` is not UTF-8"),
                    });
                }
            };
            self = self.env_value(name, value);
        }
        Ok(self)
    }

    /// The environment variable `name` with `value`.
    pub fn env_value(mut self, name: impl Into<String>, value: impl Into<String>) -> Grants {
        let name = name.into();
        self.env.retain(|(existing, _)| *existing != name);
        self.from_host.retain(|existing| *existing != name);
        self.env.push((name, value.into()));
        self
    }

    /// These grants and `more`'s (a variable in both takes `more`'s value).
    pub fn and(mut self, more: &Grants) -> Grants {
        self.dirs.extend(more.dirs.iter().cloned());
        for (name, value) in &more.env {
            self = self.env_value(name.clone(), value.clone());
        }
        for name in &more.from_host {
            self = self.env(name.clone());
        }
        self
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.env.is_empty() && self.from_host.is_empty()
    }

    /// The granted directories: (host path, guest path).
    pub fn dirs(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.dirs
            .iter()
            .map(|dir| (dir.host.as_path(), dir.guest.as_str()))
    }

    /// The names of the granted environment variables.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.env
            .iter()
            .map(|(name, _)| name.as_str())
            .chain(self.from_host.iter().map(String::as_str))
    }

    /// A `config` error unless every directory exists and every guest path
    /// is absolute, free of `..` and granted once; every variable name is
    /// non-empty and free of `=` and NUL.
    pub(crate) fn check(&self, whose: &str) -> Result<(), Error> {
        let config = |message: String| Error::Config {
            message: format!("grants of {whose}: {message}"),
        };
        for (index, dir) in self.dirs.iter().enumerate() {
            if !dir.host.is_dir() {
                return Err(config(format!("{} is not a directory", dir.host.display())));
            }
            if !dir.guest.starts_with('/')
                || dir.guest.split('/').any(|part| part == "..")
                || dir.guest.contains('\0')
            {
                return Err(config(format!(
                    "the guest path `{}` of {} is not an absolute path without `..`",
                    dir.guest.escape_debug(),
                    dir.host.display()
                )));
            }
            // `/data`, `/data/` and `/./data` are one path.
            let normal = |guest: &str| {
                let parts: Vec<&str> = guest
                    .split('/')
                    .filter(|part| !part.is_empty() && *part != ".")
                    .collect();
                parts.join("/")
            };
            if self.dirs[..index]
                .iter()
                .any(|earlier| normal(&earlier.guest) == normal(&dir.guest))
            {
                return Err(config(format!(
                    "the guest path `{}` is granted twice",
                    dir.guest
                )));
            }
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(config(format!(
                    "`{}` is not an environment variable name (or its value holds NUL)",
                    name.escape_debug()
                )));
            }
        }
        Ok(())
    }
}

/// Grants read from TOML, as in a grants file (`xcs.toml`): a `default`
/// table for every operator, and one per operator name or digest
/// (`sha256:…`), added to the default ones for it.
///
/// ```toml
/// [grants.default]
/// env = ["API_KEY"]                  # the values this process has
///                                    # when the host is built
///
/// [grants.summarize]
/// dirs = ["./prompts::/prompts"]     # HOST::GUEST, read-only; HOST
///                                    # relative to the file's directory
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantsTable {
    pub(crate) default: Grants,
    pub(crate) by_operator: std::collections::BTreeMap<String, Grants>,
}

/// One table of a grants file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantSpec {
    #[serde(default)]
    dirs: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
}

/// The `[grants]` of a TOML document, and nothing else.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    #[serde(default)]
    grants: std::collections::BTreeMap<String, GrantSpec>,
}

impl GrantsTable {
    /// Reads a grants file: only `[grants.<default | operator | digest>]`
    /// tables with `dirs` and `env`; host paths relative to `base`, the
    /// variables' values read when the host is built. A `config` error
    /// names the line of anything else.
    pub fn from_toml(text: &str, base: &Path) -> Result<GrantsTable, Error> {
        let file: GrantsFile = toml::from_str(text).map_err(|error| Error::Config {
            message: format!("grants file: {}", error.to_string().trim_end()),
        })?;
        GrantsTable::from_specs(file.grants, base)
    }

    /// The table of parsed `[grants.*]` specs (a graph file's too).
    pub(crate) fn from_specs(
        specs: std::collections::BTreeMap<String, GrantSpec>,
        base: &Path,
    ) -> Result<GrantsTable, Error> {
        let mut table = GrantsTable::default();
        for (key, spec) in specs {
            let mut grants = Grants::new();
            for dir in &spec.dirs {
                let Some((host, guest)) = dir.rsplit_once("::") else {
                    return Err(Error::Config {
                        message: format!(
                            "grants of `{key}`: `{}` is not HOST::GUEST (e.g. \"./data::/data\")",
                            dir.escape_debug()
                        ),
                    });
                };
                grants = grants.read_dir(base.join(host), guest);
            }
            for name in &spec.env {
                grants = grants.env(name.clone());
            }
            if key == "default" {
                table.default = grants;
            } else {
                table.by_operator.insert(key, grants);
            }
        }
        Ok(table)
    }

    /// This table and `more`'s, each operator's grants added up.
    pub fn and(mut self, more: &GrantsTable) -> GrantsTable {
        self.default = self.default.and(&more.default);
        for (key, grants) in &more.by_operator {
            let mine = self.by_operator.remove(key).unwrap_or_default();
            self.by_operator.insert(key.clone(), mine.and(grants));
        }
        self
    }

    /// This table with every relative host path made relative to `base`
    /// (the directory of the file it was read from).
    pub fn relative_to(mut self, base: &Path) -> GrantsTable {
        let rebase = |grants: &mut Grants| {
            for dir in &mut grants.dirs {
                if dir.host.is_relative() {
                    dir.host = base.join(&dir.host);
                }
            }
        };
        rebase(&mut self.default);
        self.by_operator.values_mut().for_each(rebase);
        self
    }

    /// The table as a grants file's `[grants]` tables: `dirs` as
    /// `HOST::GUEST`, `env` by name (the values are read again where the
    /// file is read).
    pub(crate) fn to_toml(&self) -> toml::Table {
        let write = |grants: &Grants| {
            let mut table = toml::Table::new();
            if !grants.dirs.is_empty() {
                let dirs = grants
                    .dirs
                    .iter()
                    .map(|dir| {
                        toml::Value::String(format!("{}::{}", dir.host.display(), dir.guest))
                    })
                    .collect();
                table.insert("dirs".into(), toml::Value::Array(dirs));
            }
            let names: Vec<toml::Value> = grants
                .env_names()
                .map(|name| toml::Value::String(name.to_owned()))
                .collect();
            if !names.is_empty() {
                table.insert("env".into(), toml::Value::Array(names));
            }
            toml::Value::Table(table)
        };
        let mut tables = toml::Table::new();
        if !self.default.is_empty() {
            tables.insert("default".into(), write(&self.default));
        }
        for (key, grants) in &self.by_operator {
            tables.insert(key.clone(), write(grants));
        }
        tables
    }

    /// Whether nothing is granted to any operator.
    pub fn is_empty(&self) -> bool {
        self.default.is_empty() && self.by_operator.values().all(Grants::is_empty)
    }

    /// This table with `grants` added to every operator's.
    pub fn and_default(mut self, grants: &Grants) -> GrantsTable {
        self.default = self.default.and(grants);
        self
    }

    /// The grants of every operator.
    pub fn default_grants(&self) -> &Grants {
        &self.default
    }

    /// The grants by operator name or digest, added to the default ones.
    pub fn operators(&self) -> impl Iterator<Item = (&str, &Grants)> {
        self.by_operator
            .iter()
            .map(|(key, grants)| (key.as_str(), grants))
    }
}

//! `xcs new`: a ready operator project in Rust, Python or JavaScript, that
//! builds with the language's standard tool and loads without edits.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xcs::Error;

use crate::io::{self, Usage};

/// The languages `xcs new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// A crate on the guest SDK (`xcs-guest`), built for wasm32-wasip2.
    Rust,
    /// componentize-py.
    Python,
    /// componentize-js.
    Js,
}

/// The operator contract, as `xcs wit` prints it.
pub(crate) const OPERATOR_WIT: &str = include_str!("../../../wit/operator.wit");

/// Where this build's guest SDK is, for Rust projects: the checkout the
/// binary was built from.
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest-sdk");

/// Where the contract goes in a Python or JavaScript project: a WIT
/// dependency of the operator's world.
const CONTRACT_PATH: &str = "wit/deps/xcs-operator/operator.wit";

macro_rules! template {
    ($lang:literal, $file:literal) => {
        include_str!(concat!("../templates/", $lang, "/", $file))
    };
}

/// (path in the project, template, executable)
fn files(lang: Lang) -> Vec<(&'static str, &'static str, bool)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", template!("rust", "Cargo.toml"), false),
            ("src/lib.rs", template!("rust", "lib.rs"), false),
            ("build.sh", template!("rust", "build.sh"), true),
            ("README.md", template!("rust", "README.md"), false),
            (".gitignore", template!("rust", "gitignore"), false),
        ],
        Lang::Python => vec![
            ("wit/world.wit", template!("python", "world.wit"), false),
            (CONTRACT_PATH, OPERATOR_WIT, false),
            ("app.py", template!("python", "app.py"), false),
            ("build.sh", template!("python", "build.sh"), true),
            ("README.md", template!("python", "README.md"), false),
            (".gitignore", template!("python", "gitignore"), false),
        ],
        Lang::Js => vec![
            ("wit/world.wit", template!("js", "world.wit"), false),
            (CONTRACT_PATH, OPERATOR_WIT, false),
            ("app.js", template!("js", "app.js"), false),
            ("package.json", template!("js", "package.json"), false),
            ("README.md", template!("js", "README.md"), false),
            (".gitignore", template!("js", "gitignore"), false),
        ],
    }
}

/// Rust's keywords and the crate names cargo refuses: not a package name.
const RUST_RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "xcs-guest",
    "yield",
];

/// A name is what the host accepts of an operator's metadata: kebab-case
/// words of lowercase letters and digits, each starting with a letter. It
/// is also the world's name (a WIT identifier, so no WIT keyword), the
/// package's (for Rust, no Rust keyword) and the file's.
fn check_name(name: &str, lang: Lang) -> Result<(), Usage> {
    // A WIT keyword cannot name a world without escaping, which the
    // toolchains' world lookup does not take; a Rust project's world is
    // the SDK's, but its package name cannot be a Rust keyword, a standard
    // crate or its own dependency.
    let reserved = match lang {
        Lang::Python | Lang::Js if xcs::WIT_KEYWORDS.contains(&name) => Some("a WIT keyword"),
        Lang::Rust if RUST_RESERVED.contains(&name) => Some(
            "a name cargo refuses for this package (a Rust keyword, a standard crate or xcs-guest)",
        ),
        _ => None,
    };
    if let Some(what) = reserved {
        return Err(Usage(format!("`{name}` is {what}: choose another name")));
    }
    if xcs::is_operator_name(name) {
        Ok(())
    } else {
        Err(Usage(format!(
            "`{}` is not an operator name: kebab-case words of lowercase letters and \
             digits, each starting with a letter (`word-count`), at most {} bytes",
            io::printable(name),
            xcs::MAX_OPERATOR_NAME_BYTES
        )))
    }
}

/// Writes the project for `name` into `dir` (default `./<name>`), which
/// must not exist or be empty; Rust projects depend on the SDK at `sdk`
/// (default: the checkout this binary was built from).
pub(crate) fn new(
    name: &str,
    lang: Lang,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> anyhow::Result<()> {
    check_name(name, lang)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    match std::fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Usage(format!(
                    "{} exists and is not empty: choose another --dir",
                    dir.display()
                ))
                .into());
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::io(&dir, source).into()),
    }
    let sdk = match lang {
        Lang::Rust => Some(sdk_path(sdk)?),
        Lang::Python | Lang::Js => None,
    };
    for (relative, template, executable) in files(lang) {
        let text = render(template, name, sdk.as_deref().unwrap_or(""));
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::io(parent, source))?;
        }
        io::write_file(&path, text.as_bytes())?;
        if executable {
            make_executable(&path)?;
        }
    }
    errln!(
        "wrote {} ({}); build it as its README.md says",
        dir.display(),
        match lang {
            Lang::Rust => "Rust, on the guest SDK",
            Lang::Python => "Python, for componentize-py",
            Lang::Js => "JavaScript, for componentize-js",
        }
    );
    Ok(())
}

/// A template with its placeholders filled: `{{name}}`, `{{snake}}` (the
/// name with `_` for `-`, as cargo names the built file) and `{{sdk}}`
/// (last: a path is not read for placeholders).
fn render(template: &str, name: &str, sdk: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{snake}}", &name.replace('-', "_"))
        .replace("{{sdk}}", sdk)
}

/// The guest SDK's directory, absolute, as a TOML string's content.
fn sdk_path(sdk: Option<&Path>) -> anyhow::Result<String> {
    let given = sdk.is_some();
    let sdk = sdk.unwrap_or(Path::new(SDK_DIR));
    let sdk = std::fs::canonicalize(sdk)
        .ok()
        .filter(|sdk| sdk.join("Cargo.toml").is_file())
        .ok_or_else(|| {
            Usage(if given {
                format!("--sdk {}: no crate there", sdk.display())
            } else {
                format!(
                    "the guest SDK this xcs was built from is gone ({}): pass --sdk \
                     <the guest-sdk directory of an xcs checkout>",
                    sdk.display()
                )
            })
        })?;
    let text = sdk
        .to_str()
        .with_context(|| format!("{} is not UTF-8", sdk.display()))?;
    // A TOML basic string: backslashes and quotes escaped; no control
    // characters (they would need \u escapes, and no real path has them).
    if text.chars().any(char::is_control) {
        return Err(Usage(format!(
            "the guest SDK's path {} has control characters: pass --sdk <a plain path>",
            sdk.display()
        ))
        .into());
    }
    Ok(text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|source| Error::io(path, source).into())
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kebab_case_and_no_keyword() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            assert!(check_name("word-count", lang).is_ok());
            assert!(check_name("a1-b2", lang).is_ok());
            for bad in [
                "",
                "Word",
                "word_count",
                "-a",
                "a-",
                "a--b",
                "1a",
                "a b",
                "é",
            ] {
                assert!(check_name(bad, lang).is_err(), "{bad:?}");
            }
            assert!(check_name(&"a".repeat(65), lang).is_err());
        }
        for lang in [Lang::Python, Lang::Js] {
            assert!(check_name("record", lang).is_err());
            assert!(check_name("error-context", lang).is_err());
        }
        assert!(check_name("record", Lang::Rust).is_ok(), "the SDK's world");
        assert!(check_name("xcs-guest", Lang::Rust).is_err());
        assert!(check_name("match", Lang::Rust).is_err());
        assert!(check_name("match", Lang::Python).is_ok());
        assert!(check_name("std", Lang::Rust).is_err());
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for (path, template, _) in files(lang) {
                let text = render(template, "a-b", "/sdk");
                assert!(!text.contains("{{"), "{lang:?} {path}: {text}");
            }
        }
    }
}

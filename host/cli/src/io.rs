//! Reading input and writing files.

use std::io::{IsTerminal, Read};
use std::path::Path;

use serde_json::Value;
use xcs::{Error, Host};

use crate::InputArgs;

/// Writes the metrics file when asked; a failure to write it is an error
/// only when nothing else failed.
pub(crate) fn write_metrics(
    host: &Host,
    path: Option<&Path>,
    succeeded: bool,
) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    match write_file(path, host.metrics_text().as_bytes()) {
        Err(error) if succeeded => Err(error),
        Err(error) => {
            eprintln!("warning: {error:#}");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::io(path, source).into())
}

/// Reads the input JSON, at most `max_text` bytes of it.
pub(crate) fn read_input(args: &InputArgs, operator: &str, max_text: u64) -> anyhow::Result<Value> {
    let (origin, text) = if let Some(text) = &args.input {
        ("--input", text.clone())
    } else if let Some(file) = &args.input_file {
        let file_handle = std::fs::File::open(file).map_err(|source| Error::io(file, source))?;
        ("--input-file", read_bounded(file_handle, max_text, file)?)
    } else if std::io::stdin().is_terminal() {
        return Ok(Value::Null);
    } else {
        let text = read_bounded(std::io::stdin().lock(), max_text, Path::new("<stdin>"))?;
        if text.trim().is_empty() {
            // Nothing piped in: no arguments.
            return Ok(Value::Null);
        }
        ("stdin", text)
    };
    if text.len() as u64 > max_text {
        return Err(Error::InputTooLarge {
            operator: operator.to_owned(),
            size: text.len() as u64,
            limit: max_text,
        }
        .into());
    }
    serde_json::from_str(&text).map_err(|error| {
        Error::Validation {
            operator: operator.to_owned(),
            path: "$".into(),
            expected: format!("JSON ({origin})"),
            found: format!("invalid JSON: {error}"),
        }
        .into()
    })
}

fn read_bounded(reader: impl Read, max: u64, path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    reader
        .take(max.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|source| Error::io(path, source))?;
    Ok(text)
}

//! Reading input, writing files, and writing to stdout and stderr
//! without panicking on a closed pipe or a full disk.

use std::fmt;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use serde_json::Value;
use xcs::{Error, Host};

use crate::InputArgs;

/// `println!` to stdout, returning its failure.
macro_rules! outln {
    ($($arg:tt)*) => { crate::io::write_out(format_args!($($arg)*), true) };
}

/// `print!` to stdout, returning its failure.
macro_rules! out {
    ($($arg:tt)*) => { crate::io::write_out(format_args!($($arg)*), false) };
}

/// `eprintln!` that cannot panic.
macro_rules! errln {
    ($($arg:tt)*) => { crate::io::write_err(format_args!($($arg)*), true) };
}

/// `eprint!` that cannot panic.
macro_rules! err {
    ($($arg:tt)*) => { crate::io::write_err(format_args!($($arg)*), false) };
}

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
            errln!("warning: {error:#}");
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

/// The reader of stdout went away (a closed pipe): the command stops
/// quietly, as Unix tools do.
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` to stdout (and a newline with `newline`), flushed: a
/// closed pipe is [`StdoutClosed`], another failure (a full disk) an `io`
/// error.
pub(crate) fn write_out(text: fmt::Arguments<'_>, newline: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(text)
        .and_then(|()| {
            if newline {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(error) => Err(Error::io("<stdout>", error).into()),
    }
}

/// Writes `text` and a newline to stderr; a failure there has nowhere to
/// be reported, so it is ignored (the exit code still tells).
pub(crate) fn write_err(text: fmt::Arguments<'_>, newline: bool) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_fmt(text).and_then(|()| {
        if newline {
            stderr.write_all(b"\n")
        } else {
            Ok(())
        }
    });
}

/// Guest-controlled `text` made safe to print: control characters (an
/// escape sequence, a carriage return) are written as `\u{..}`, and every
/// line after the first is indented, so that no line a guest wrote can
/// pass for one of ours (`error[timeout]: ...`).
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.push_str("\n  ");
        }
        for c in line.chars() {
            if c.is_control() && c != '\t' {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
        }
    }
    out
}

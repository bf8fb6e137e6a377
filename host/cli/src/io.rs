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
    write_metrics_with(host, "", path, succeeded)
}

/// [`write_metrics`], with `more` (an exposition of other metrics,
/// without its `# EOF`) after the host's.
pub(crate) fn write_metrics_with(
    host: &Host,
    more: &str,
    path: Option<&Path>,
    succeeded: bool,
) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let text = host.metrics_text();
    let text = match text.strip_suffix("# EOF\n") {
        Some(before) if !more.is_empty() => format!("{before}{more}# EOF\n"),
        _ => text,
    };
    match write_file(path, text.as_bytes()) {
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

/// Reads the input JSON: at most `max_text` bytes of text, parsed into at
/// most `max_text` bytes of values (a parsed value takes far more memory
/// than its text: `[0,0,...]` 16 times as much), both refused as they are
/// read rather than after.
pub(crate) fn read_input(args: &InputArgs, operator: &str, max_text: u64) -> anyhow::Result<Value> {
    let (origin, bytes) = if let Some(text) = &args.input {
        ("--input", text.clone().into_bytes())
    } else if let Some(file) = &args.input_file {
        let file_handle = std::fs::File::open(file).map_err(|source| Error::io(file, source))?;
        ("--input-file", read_bounded(file_handle, max_text, file)?)
    } else if std::io::stdin().is_terminal() {
        return Ok(Value::Null);
    } else {
        let bytes = read_bounded(std::io::stdin().lock(), max_text, Path::new("<stdin>"))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // Nothing piped in: no arguments.
            return Ok(Value::Null);
        }
        ("stdin", bytes)
    };
    parse_json(&bytes, operator, max_text, origin).map_err(Into::into)
}

/// Parses `bytes` (from `origin`, for the error) as JSON: at most
/// `max_text` bytes of text, parsed into at most `max_text` bytes of values.
pub(crate) fn parse_json(
    bytes: &[u8],
    operator: &str,
    max_text: u64,
    origin: &str,
) -> Result<Value, Error> {
    let too_large = |size: u64| Error::InputTooLarge {
        operator: operator.to_owned(),
        size,
        limit: max_text,
    };
    if bytes.len() as u64 > max_text {
        return Err(too_large(bytes.len() as u64));
    }
    let invalid = |found: String| Error::Validation {
        operator: operator.to_owned(),
        path: "$".into(),
        expected: format!("JSON ({origin})"),
        found,
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|error| invalid(format!("text that is not UTF-8: {error}")))?;
    let mut budget = Budget(max_text);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value =
        serde::de::DeserializeSeed::deserialize(BoundedValue(&mut budget), &mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value));
    match value {
        Ok(value) => Ok(value),
        Err(_) if budget.0 == 0 => Err(too_large(max_text.saturating_add(1))),
        Err(error) => Err(invalid(format!("invalid JSON: {error}"))),
    }
}

/// Bytes of parsed values still allowed.
struct Budget(u64);

impl Budget {
    /// Spends `bytes`; `false` once the budget is spent.
    fn spend(&mut self, bytes: usize) -> bool {
        match self.0.checked_sub(bytes as u64) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => {
                self.0 = 0;
                false
            }
        }
    }
}

/// A `serde_json::Value` deserialized within a [`Budget`]: each value
/// costs its own size, strings and keys their bytes too.
struct BoundedValue<'a>(&'a mut Budget);

impl<'de> serde::de::DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl BoundedValue<'_> {
    fn spend<E: serde::de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        if self.0.spend(size_of::<Value>() + bytes) {
            Ok(())
        } else {
            Err(E::custom("over the input size limit"))
        }
    }
}

impl<'de> serde::de::Visitor<'de> for BoundedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_bool<E: serde::de::Error>(mut self, value: bool) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: serde::de::Error>(mut self, value: i64) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::from(value))
    }

    fn visit_u64<E: serde::de::Error>(mut self, value: u64) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::from(value))
    }

    fn visit_f64<E: serde::de::Error>(mut self, value: f64) -> Result<Value, E> {
        self.spend(0)?;
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(mut self, value: &str) -> Result<Value, E> {
        self.spend(value.len())?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(mut self, value: String) -> Result<Value, E> {
        self.spend(value.len())?;
        Ok(Value::String(value))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.spend(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(BoundedValue(&mut *self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.spend(0)?;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.spend(key.len())?;
            let value = map.next_value_seed(BoundedValue(&mut *self.0))?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn read_bounded(reader: impl Read, max: u64, path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| Error::io(path, source))?;
    Ok(bytes)
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

/// A command given what it cannot use (exit code 2, as clap's own usage
/// errors), said in words.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

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
/// line after the first starts with white space (is indented if it does
/// not), so that no line a guest wrote can pass for the first line of one
/// of ours (`error[timeout]: ...`).
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.push('\n');
            if !line.starts_with([' ', '\t']) {
                out.push_str("  ");
            }
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

/// How long a load runs before a terminal shows a spinner for it.
const SPINNER_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// `host.load(path)`, with a spinner on stderr when it is a terminal and
/// the load takes long enough to look hung: compiling a large component
/// is seconds of work (a cached load is not). `--timeout` bounds the
/// call, not this.
pub(crate) async fn load(host: &Host, path: &Path) -> Result<xcs::Operator, Error> {
    if !std::io::stderr().is_terminal() {
        return host.load(path).await;
    }
    let load = host.load(path);
    tokio::pin!(load);
    tokio::select! {
        loaded = &mut load => return loaded,
        () = tokio::time::sleep(SPINNER_AFTER) => {}
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "loading {} (compiling)",
        printable(&path.display().to_string())
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let loaded = load.await;
    spinner.finish_and_clear();
    loaded
}

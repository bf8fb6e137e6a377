//! Test operator `reader`: what a guest can reach of the host's files and
//! environment (nothing, unless granted).

use xcs_guest::Error;

/// Does `request`: `read:PATH` (the file's text), `list:PATH` (the
/// directory's entries, sorted, comma-separated), `write:PATH` (writes
/// `x`), `env:NAME` (the variable's value). A refusal is an `io` error
/// with the guest's own words; an unset variable an `unset` error.
#[xcs_guest::operator]
fn reader(request: String) -> Result<String, Error> {
    let io = |error: std::io::Error| Error::new("io", error.to_string());
    let (verb, argument) = request
        .split_once(':')
        .ok_or_else(|| Error::invalid_input("expected VERB:ARGUMENT"))?;
    match verb {
        "read" => std::fs::read_to_string(argument).map_err(io),
        "list" => {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(argument).map_err(io)? {
                names.push(
                    entry
                        .map_err(io)?
                        .file_name()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            names.sort();
            Ok(names.join(","))
        }
        "write" => std::fs::write(argument, "x")
            .map(|()| "written".into())
            .map_err(io),
        "env" => std::env::var(argument)
            .map_err(|error| Error::new("unset", format!("{argument}: {error}"))),
        _ => Err(Error::invalid_input(format!("unknown verb `{verb}`"))),
    }
}

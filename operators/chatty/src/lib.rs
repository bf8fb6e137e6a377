//! Adversarial fixture `chatty`: a log flood.

use std::fmt::Write as _;
use xcs_guest::Error;

const MESSAGES: u32 = 100_000;
const MESSAGE_BYTES: usize = 100;

/// Logs 100,000 messages of about 100 bytes each and returns how many it sent.
#[xcs_guest::operator]
fn chatty() -> Result<u32, Error> {
    let mut message = String::with_capacity(MESSAGE_BYTES);
    for index in 0..MESSAGES {
        message.clear();
        write!(
            message,
            "chatty fixture: message {index:06} of {MESSAGES}, padded to "
        )
        .map_err(|_| Error::internal("formatting a log message failed"))?;
        while message.len() < MESSAGE_BYTES {
            message.push('.');
        }
        xcs_guest::log::info(&message);
    }
    Ok(MESSAGES)
}

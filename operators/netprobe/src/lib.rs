//! Test operator `netprobe`: tries the network the way any Rust program
//! would (std's TCP, UDP and name lookup, which link `wasi:sockets`) and
//! reports each outcome, so that tests can prove the sockets the sandbox
//! links are inert.

use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

use xcs_guest::Error;

/// Tries to connect to `address` over TCP, to bind a UDP socket, and to
/// look up `host`; returns one line per attempt: `ok` or the error.
#[xcs_guest::operator]
fn netprobe(address: String, host: String) -> Result<Vec<String>, Error> {
    let outcome = |result: Result<(), std::io::Error>| match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => format!("error: {error}"),
    };
    Ok(vec![
        format!(
            "tcp connect: {}",
            outcome(TcpStream::connect(address.as_str()).map(drop))
        ),
        format!(
            "udp bind: {}",
            outcome(UdpSocket::bind("0.0.0.0:0").map(drop))
        ),
        format!(
            "lookup: {}",
            outcome((host.as_str(), 80).to_socket_addrs().map(drop))
        ),
    ])
}

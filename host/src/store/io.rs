//! A guest that waits on the host through `wasi:io` (a pollable, a
//! blocking read or write: an HTTP response, a timer) waits off its turn,
//! as a capability call does: its turn goes to another guest meanwhile.
//! wasmtime-wasi's own functions would hold the turn while they wait, so
//! that two guests waiting on slow servers would stop every other call of
//! a two-turn host. These wrap the same implementations in
//! [`Seat::away`](crate::turns::Seat::away).

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    self as streams, Host as _, HostInputStream as _, HostOutputStream as _,
};
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, StreamError};

use super::StoreState;

/// The versions of the instances wasmtime-wasi links (guests' 0.2.x
/// imports link to them).
const POLL: &str = "wasi:io/poll@0.2.12";
const STREAMS: &str = "wasi:io/streams@0.2.12";

/// The WIT `result` of a stream operation, or the trap.
fn stream_result<T>(
    state: &mut StoreState,
    result: Result<T, StreamError>,
) -> wasmtime::Result<(Result<T, streams::StreamError>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(error) => Ok((Err(state.table.convert_stream_error(error)?),)),
    }
}

/// Replaces the waiting functions of `wasi:io/poll` and `wasi:io/streams`
/// (linked by `wasmtime_wasi::p2::add_to_linker_async`) with ones that
/// wait off turn.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = link(linker);
    linker.allow_shadowing(false);
    linked
}

fn link(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let mut poll = linker.instance(POLL)?;
    poll.func_wrap_async(
        "poll",
        |mut store, (pollables,): (Vec<Resource<DynPollable>>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let seat = state.seat.clone();
                let ready = seat.away(state.table.poll(pollables)).await?;
                Ok((ready,))
            })
        },
    )?;
    poll.func_wrap_async(
        "[method]pollable.block",
        |mut store, (pollable,): (Resource<DynPollable>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let seat = state.seat.clone();
                seat.away(state.table.block(pollable)).await?;
                Ok(())
            })
        },
    )?;
    let mut streams = linker.instance(STREAMS)?;
    streams.func_wrap_async(
        "[method]input-stream.blocking-read",
        |mut store, (stream, len): (Resource<DynInputStream>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let seat = state.seat.clone();
                let read = seat.away(state.table.blocking_read(stream, len)).await;
                stream_result(state, read)
            })
        },
    )?;
    streams.func_wrap_async(
        "[method]input-stream.blocking-skip",
        |mut store, (stream, len): (Resource<DynInputStream>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let seat = state.seat.clone();
                let skipped = seat.away(state.table.blocking_skip(stream, len)).await;
                stream_result(state, skipped)
            })
        },
    )?;
    streams.func_wrap_async(
        "[method]output-stream.blocking-write-and-flush",
        |mut store, (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            Box::new(async move {
                let state = store.data_mut();
                let seat = state.seat.clone();
                let written = seat
                    .away(state.table.blocking_write_and_flush(stream, bytes))
                    .await;
                stream_result(state, written)
            })
        },
    )?;
    streams.func_wrap_async(
        "[method]output-stream.blocking-flush",
        |mut store, (stream,): (Resource<DynOutputStream>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let seat = state.seat.clone();
                let flushed = seat.away(state.table.blocking_flush(stream)).await;
                stream_result(state, flushed)
            })
        },
    )?;
    Ok(())
}

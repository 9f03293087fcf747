//! The wire decoder on arbitrary bytes: never panics, and the same bytes give the same
//! commands and replies whether they arrive at once or split at arbitrary points.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use yaad::protocol::Decoder;

/// Decodes `chunks` fed one after another; each outcome as text (commands by Debug, replies by
/// their wire bytes).
fn decode_all(chunks: &[&[u8]]) -> Vec<String> {
    let mut decoder = Decoder::new(1024);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(outcome) = decoder.decode(&mut buf) {
            out.push(match outcome {
                Ok(cmd) => format!("{cmd:?}"),
                Err(reply) => {
                    let mut bytes = Vec::new();
                    reply.encode(&mut bytes);
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            });
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the split points: every `step`-th byte starts a new chunk.
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));
    let whole = decode_all(&[input]);
    let pieces: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(whole, decode_all(&pieces));
});

//! The segment log's frame decoder on arbitrary bytes: it must never panic, never
//! allocate from a declared length, and whatever it accepts must re-encode to the
//! same bytes. Run: `cargo fuzz run log_frame_decoder` (from `fuzz/`).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runnel_log::frame;

fuzz_target!(|data: &[u8]| {
    let (frames, _stop) = frame::decode_frames(data);
    let mut pos = 0;
    for h in frames {
        let buf = Bytes::copy_from_slice(&data[pos..pos + h.total]);
        let (entry, total) = frame::decode_entry(&buf).expect("decode_frames accepted it");
        assert_eq!(total, h.total);
        let mut again = Vec::new();
        frame::encode_frame(&mut again, &entry);
        assert_eq!(again, &data[pos..pos + h.total], "a valid frame re-encodes identically");
        pos += h.total;
    }
});

//! The gRPC codec of every Runnel service: prost, with the encode buffer sized once.
//!
//! Why not `tonic_prost::ProstCodec`: it encodes a message into tonic's 8 KiB buffer
//! and lets `BytesMut` grow by doubling, so a multi-megabyte message (a `BatchAppend`
//! of record batches, a full `PutRecords`, a `GetRecords` page) is copied again at
//! every growth and faults in fresh pages each time. Profiles of the whole-cluster
//! write path put those reallocations at about 6% of a node's CPU. Reserving the
//! message's exact encoded length first makes the encode one copy.
//!
//! The generated code names this codec because `build.rs` rewrites the generator's
//! default (madsim-tonic-build does not expose tonic-prost-build's `codec_path`).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// prost messages over gRPC, encoded in one pass into a buffer reserved to size.
#[derive(Debug, Clone)]
pub struct SizedProstCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for SizedProstCodec<T, U> {
    fn default() -> Self {
        SizedProstCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for SizedProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedProstEncoder { _pd: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Encodes `T` after reserving its encoded length.
#[derive(Debug, Clone)]
pub struct SizedProstEncoder<T> {
    _pd: PhantomData<T>,
}

impl<T: Message> Encoder for SizedProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

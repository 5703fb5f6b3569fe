//! The codec every OTLP export service uses: the request message handed
//! over undecoded, so that its cost is bounded ([`crate::otlp::scan`]) and
//! held in the memory budget before prost builds anything; the response
//! (`R`) encoded with prost.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::codec::{EncodeBuf, Encoder};

/// Raw request bytes in, `R` out.
pub struct RawCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

pub struct RawDecoder;

pub struct ResponseEncoder<R>(PhantomData<fn() -> R>);

impl<R: Message + Send + 'static> Codec for RawCodec<R> {
    type Encode = R;
    type Decode = bytes::Bytes;
    type Encoder = ResponseEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder<R> {
        ResponseEncoder(PhantomData)
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = bytes::Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<bytes::Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl<R: Message> Encoder for ResponseEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

/// A unary server over [`RawCodec`]: gzip both ways, messages up to
/// `limit` bytes (inflated).
pub fn server<R: Message + Send + 'static>(limit: usize) -> tonic::server::Grpc<RawCodec<R>> {
    let mut gzip = EnabledCompressionEncodings::default();
    gzip.enable(CompressionEncoding::Gzip);
    tonic::server::Grpc::new(RawCodec::default())
        .apply_compression_config(gzip, gzip)
        .apply_max_message_size_config(Some(limit), None)
}

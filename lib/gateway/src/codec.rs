//! Tonic codecs for messages known only at run time: the gateway forwards
//! any annotated RPC without generated code for it.

use bytes::{Buf, Bytes};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

#[derive(Clone, Debug)]
pub struct DynamicCodec {
    response: MessageDescriptor,
}

impl DynamicCodec {
    pub fn new(response: MessageDescriptor) -> Self {
        Self { response }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.response.clone())
    }
}

#[derive(Clone, Debug)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

#[derive(Clone, Debug)]
pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        decode_answer(self.0.clone(), src).map(Some)
    }
}

/// An answer's bytes as a message of `descriptor`; INTERNAL if they are not.
pub fn decode_answer(
    descriptor: MessageDescriptor,
    bytes: impl Buf,
) -> Result<DynamicMessage, Status> {
    DynamicMessage::decode(descriptor, bytes)
        .map_err(|e| Status::internal(format!("decoding the response: {e}")))
}

/// Sends a `DynamicMessage` and receives the answer's bytes as they came:
/// a unary answer's JSON is written straight from them
/// (`response_json`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawAnswerCodec;

impl Codec for RawAnswerCodec {
    type Encode = DynamicMessage;
    type Decode = Bytes;
    type Encoder = DynamicEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

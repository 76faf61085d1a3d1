//! The header of a WebSocket frame the server sends (RFC 6455 §5.2): FIN, an opcode, no
//! mask, and the payload length in 7, 7+16 or 7+64 bits.
//!
//! Frames from a server are never masked, so the bytes on the wire of a stored media
//! frame are the same for every viewer: its header is encoded once, when the frame is
//! stored, and each viewer's socket is given that header and the shared payload as two
//! slices of one vectored write. A leaf module: the stream core and the egress both use it.

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// The encoded header of one final (FIN) unmasked frame: 2, 4 or 10 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WsHead {
    bytes: [u8; 10],
    len: u8,
}

impl WsHead {
    /// The header of a whole message of `payload_len` bytes.
    pub fn new(opcode: Opcode, payload_len: usize) -> WsHead {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | opcode as u8;
        let len = match payload_len {
            0..=125 => {
                bytes[1] = payload_len as u8;
                2
            }
            126..=0xFFFF => {
                bytes[1] = 126;
                bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = 127;
                bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
                10
            }
        };
        WsHead { bytes, len }
    }

    pub fn binary(payload_len: usize) -> WsHead {
        WsHead::new(Opcode::Binary, payload_len)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for WsHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WsHead({:02x?})", self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    /// tungstenite's encoding of the same frame, the reference.
    fn reference(payload_len: usize) -> Vec<u8> {
        let frame = Frame::message(vec![7u8; payload_len], OpCode::Data(Data::Binary), true);
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out.truncate(out.len() - payload_len);
        out
    }

    #[test]
    fn headers_match_a_reference_encoder_at_every_length_boundary() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 64 * 1024, 16 << 20] {
            assert_eq!(
                WsHead::binary(len).as_bytes(),
                reference(len),
                "{len} bytes"
            );
        }
    }
}

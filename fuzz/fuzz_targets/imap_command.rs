//! IMAP command parsing with arbitrary bytes, the way Bulwark's IMAP
//! session parses a framed command (crates/imap/src/session.rs `parse`):
//! `CommandCodec::default().decode(..)`, then `into_static()`, plus the tag
//! check the framer does on the first word (crates/imap/src/framing.rs).
//!
//! bulwark-imap has no public entry point for its framer yet; when it gains
//! `bulwark_imap::fuzz_framing`, call it here as well (see README.md).
#![no_main]

use imap_codec::CommandCodec;
use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::encode::Encoder;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::Tag;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let codec = CommandCodec::default();
    let mut rest = data;
    // A stream of pipelined commands; bounded because every Ok consumes
    // at least one byte.
    for _ in 0..=data.len() {
        if rest.is_empty() {
            break;
        }
        // The framer reads the tag from the first word of each command.
        if let Some(word) = rest.split(|&b| b == b' ').next() {
            if let Ok(tag) = std::str::from_utf8(word) {
                let _ = Tag::validate(tag);
            }
        }
        match codec.decode(rest) {
            Ok((remaining, command)) => {
                assert!(remaining.len() < rest.len(), "decode consumed nothing");
                let command = command.into_static();
                // The handler formats tags and echoes parts of commands.
                let _ = format!("{command:?}");
                let _ = codec.encode(&command).dump();
                rest = remaining;
            }
            Err(CommandDecodeError::Incomplete) => break,
            Err(CommandDecodeError::LiteralFound { .. }) => break,
            Err(CommandDecodeError::Failed) => {
                // Skip to the next line, as a server resynchronising would.
                match rest.iter().position(|&b| b == b'\n') {
                    Some(lf) => rest = &rest[lf + 1..],
                    None => break,
                }
            }
        }
    }
});

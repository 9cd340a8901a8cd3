//! The IMAP front end: IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) over
//! the shared account data model.
//!
//! What this crate owns:
//! * [`ImapHandler`], the [`bulwark_server::ConnectionHandler`] for the
//!   `imap` (STARTTLS) and `imaps` listeners;
//! * the IMAP session: framing of lines and literals with caps, parsing
//!   with `imap-codec`, the state machine (not authenticated →
//!   authenticated → selected → logout), response encoding;
//! * the IMAP views of the data model: mailbox names (modified UTF-7),
//!   flags ↔ keywords, message sequence numbers, FETCH sections, ENVELOPE
//!   and BODYSTRUCTURE computed from the stored bytes, SEARCH.
//!
//! What it must not do:
//! * store anything of its own: every mailbox, message and flag lives in
//!   the store, so JMAP, POP3 and other sessions see the same data (the
//!   shared mailbox listings, `listing`, and the ENVELOPE cache,
//!   `envelopes`, are in-memory copies brought up to date from the
//!   store's change log or keyed by message content, never written back);
//! * decide who may log in or count failures itself: that is the
//!   directory's job ([`bulwark_directory::Directory::authenticate`]),
//!   called for every attempt;
//! * reach another account's data without a right: mailbox names are
//!   resolved in one place (`handler::reach`), with the rights the user
//!   holds there rechecked on every command;
//! * accept a password before TLS (LOGINDISABLED, RFC 9051 section 6.2.3);
//! * hold unbounded client input: see [`Limits`].
//!
//! # Design
//!
//! Sans-I/O where it matters (DESIGN.md "Protocol codecs are sans-I/O"):
//! `framing` (lines and literals with caps, decided before literal bytes
//! are accepted), `session` (parsing, state rules, capabilities), `view`
//! (MSN/UID bookkeeping and when expunges may be announced), `fetch`,
//! `mime`, `search`, `sort`, `objectid`, `quota`, `names`, `flags` and
//! `out` have no tokio, sockets or storage and are unit-tested with transcripts and known answers.
//! `listing` holds the versioned, chunked mailbox listings the sessions
//! share (pure, and unit-tested the same way) and the cache that keeps
//! the newest one per mailbox in step with the store.
//! `handler` is the thin async layer that reads, writes and calls the
//! store. Commands are executed there rather than emitted as storage
//! requests from the state machine: most commands interleave MSN
//! bookkeeping with several storage calls, and modelling each as a
//! request/response pair would have doubled this first slice. The pure
//! pieces the executor calls are where the protocol logic lives.
//!
//! # Status against RFC 9051
//!
//! Implemented: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN and
//! AUTHENTICATE PLAIN (SASL-IR) after TLS, ENABLE (IMAP4rev2), ID,
//! NAMESPACE, LIST/LSUB (CHILDREN, SPECIAL-USE attributes), STATUS,
//! SELECT/EXAMINE, CREATE, DELETE, SUBSCRIBE/UNSUBSCRIBE (no-ops: every
//! mailbox is subscribed), APPEND (APPENDLIMIT, LITERAL+), FETCH and UID
//! FETCH, STORE, EXPUNGE, UID EXPUNGE (UIDPLUS), CLOSE, UNSELECT, COPY,
//! MOVE, RENAME, SEARCH (ESEARCH form after ENABLE IMAP4rev2), IDLE, CHECK.
//! CONDSTORE and QRESYNC (RFC 7162) from the account change log: ENABLE,
//! SELECT/EXAMINE (CONDSTORE) and (QRESYNC (...)) with VANISHED (EARLIER),
//! FETCH MODSEQ and CHANGEDSINCE (VANISHED), STORE UNCHANGEDSINCE with
//! MODIFIED, SEARCH MODSEQ, STATUS HIGHESTMODSEQ, VANISHED for expunges.
//!
//! ACL (RFC 4314) with RIGHTS=kxte: SETACL, DELETEACL, GETACL, LISTRIGHTS,
//! MYRIGHTS (parsed in [`acl`], which imap-codec lacks); other accounts'
//! mailboxes in the "Other Users" and "Shared Folders" namespaces
//! (RFC 2342), reached through a full-access grant or the owner's ACL
//! entries, every right checked per command and every non-owner access
//! audited.
//!
//! LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819) and the
//! SPECIAL-USE selection option, SEARCH RETURN (MIN MAX COUNT ALL,
//! RFC 4731) and SEARCHRES (`SAVE` and `$`, RFC 5182): imap-codec
//! 2.0.0-alpha.10 parses none of them, so [`listext`] recognises these
//! forms before the codec (`$` becomes the saved UIDs).
//!
//! UTF8=ACCEPT (RFC 6855): after ENABLE, names are UTF-8 both ways.
//! MULTIAPPEND (RFC 3502): several messages in one store write, all or
//! none, also parsed in [`listext`].
//!
//! Extensions:
//! * QUOTA and QUOTA=RES-STORAGE (RFC 9208, `quota`): one quota root, "",
//!   per account with a quota; GETQUOTAROOT, GETQUOTA; SETQUOTA is refused
//!   with NOPERM (administrators set quotas); APPEND over the quota fails
//!   with OVERQUOTA.
//! * OBJECTID (RFC 8474, `objectid`): MAILBOXID in SELECT/EXAMINE and
//!   STATUS, EMAILID and THREADID in FETCH. imap-codec does not parse
//!   these items, so a bounded pre-parse takes them out of the command
//!   before parsing and the executor adds them to the answer.
//! * SORT, THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256,
//!   `sort`), with UID forms, over the store's cached header facts; the
//!   search criteria go through the SEARCH evaluator.
//! * BINARY (RFC 3516): FETCH BINARY, BINARY.PEEK and BINARY.SIZE
//!   (base64 and quoted-printable decoded, UNKNOWN-CTE otherwise) and
//!   APPEND with a literal8.
//!
//!
//! SEARCH EMAILID/THREADID (RFC 8474 section 6) where they AND with the
//! other criteria.
//!
//! Not yet: SORT=DISPLAY, the UTF8 APPEND data
//! item, ACL entries for groups and negative rights.
//!
//! POP3 (RFC 1939 with STLS, CAPA, UIDL, TOP and SASL PLAIN) lives in
//! [`pop3`], over the same Inbox.

#![forbid(unsafe_code)]

mod acl;
mod envelopes;
mod fetch;
mod flags;
mod framing;
mod handler;
mod limits;
mod listext;
mod listing;
mod mime;
mod names;
mod objectid;
mod out;
pub mod pop3;
mod quota;
mod search;
mod session;
mod sort;
mod view;

pub use handler::ImapHandler;
pub use limits::Limits;
pub use pop3::{Pop3Handler, Pop3Limits};

/// A fuzzing entry point (for the `cargo fuzz` target `imap_framing`
/// outside the workspace): frames and parses arbitrary client bytes exactly
/// as a session does (framer with caps, then imap-codec, then the state
/// rules), in each state, fed in two uneven parts to exercise resumption,
/// with the line mode of IDLE and AUTHENTICATE and the buffer drop of
/// STARTTLS. Must never panic, and every step must consume input or end the
/// session.
#[doc(hidden)]
pub fn fuzz_framing(input: &[u8]) {
    use imap_codec::imap_types::command::CommandBody;
    use session::{Input, Session, State};

    // Small caps so that the limit paths are reached by small inputs.
    let limits = Limits {
        max_line_bytes: 512,
        max_literal_bytes: 64,
        max_append_bytes: 1024,
        max_command_bytes: 2048,
        ..Limits::default()
    };
    for state in [
        State::NotAuthenticated,
        State::Authenticated,
        State::Selected,
    ] {
        let mut session = Session::new(limits.clone(), false, true);
        session.state = state;
        let cut = input.len() / 3;
        'parts: for part in [&input[..cut], &input[cut..]] {
            session.feed(part);
            let mut steps = 0usize;
            while let Some(next) = session.next_input() {
                steps += 1;
                // Each step takes at least one line (or ends the session).
                assert!(steps <= part.len() + 2, "framer does not make progress");
                match next {
                    Input::Write(_) => {}
                    Input::Close(_) => break 'parts,
                    Input::StartTls(_) => session.start_tls(),
                    Input::Acl(..) | Input::List(..) | Input::MultiAppend(..) => session.good(),
                    Input::Command(command) => match command.body {
                        // The handler reads bare lines for these.
                        CommandBody::Idle | CommandBody::Authenticate { .. } => {
                            if let Some(Err(_)) = session.next_line() {
                                break 'parts;
                            }
                        }
                        _ => session.good(),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod fuzz_entry_tests {
    #[test]
    fn framing_entry_point_survives_hostile_seeds() {
        for input in [
            &b"a LOGIN {5}\r\nalice {8}\r\npassword\r\nb SELECT INBOX\r\nc IDLE\r\nDONE\r\n"[..],
            b"a APPEND INBOX {99999999}\r\n",
            b"a STARTTLS\r\nb LOGIN x y\r\n",
            b"a FETCH 1:* (((((((((((((((((FLAGS))))))))))))))))\r\n",
            &[b'x'; 4096],
            b"",
        ] {
            super::fuzz_framing(input);
        }
    }
}

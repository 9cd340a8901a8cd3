//! The protocol core of one IMAP session: framing with caps, parsing with
//! imap-codec, the state machine's rules (which command is valid in which
//! state), capabilities and the errors that end a session. Sans-I/O: bytes
//! go in through [`Session::feed`], [`Session::next_input`] hands out
//! parsed commands or bytes to write. Executing commands against storage
//! is `handler.rs`'s job.
//!
//! States (RFC 9051 section 3): not authenticated → authenticated →
//! selected → logout.

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::{Command, CommandBody};

use crate::acl::AclCommand;
use crate::framing::{Frame, Framer, Reject};
use crate::limits::Limits;
use crate::listext::{AppendItem, ExtendedList, SearchReturn};
use crate::objectid::{self, Extras};
use crate::out;

/// Where the session is in RFC 9051's state diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Before LOGIN/AUTHENTICATE.
    NotAuthenticated,
    /// Logged in, no mailbox selected.
    Authenticated,
    /// A mailbox is selected.
    Selected,
    /// LOGOUT or BYE: nothing more is read.
    Logout,
}

/// What the session wants done next.
#[derive(Debug)]
pub(crate) enum Input {
    /// Write these bytes (continuation requests, BAD answers).
    Write(Vec<u8>),
    /// Write these bytes, then close the connection.
    Close(Vec<u8>),
    /// A command that is valid in the current state, for the executor.
    Command(Command<'static>),
    /// `tag STARTTLS` (parsed here: imap-codec gates it behind a feature
    /// this workspace does not enable).
    StartTls(String),
    /// An ACL command (RFC 4314), parsed here: imap-codec has none.
    Acl(String, AclCommand),
    /// LIST with LIST-EXTENDED options, parsed here for the same reason.
    List(String, ExtendedList),
    /// APPEND of several messages (MULTIAPPEND, RFC 3502): tag, mailbox,
    /// messages.
    MultiAppend(String, Vec<u8>, Vec<AppendItem>),
}

/// The sans-I/O session core.
#[derive(Debug)]
pub(crate) struct Session {
    framer: Framer,
    /// Current state.
    pub state: State,
    /// Whether the connection is encrypted.
    pub tls: bool,
    /// Whether STARTTLS can be offered.
    pub tls_available: bool,
    /// `ENABLE IMAP4rev2` was sent (RFC 9051 section 6.3.1).
    pub rev2: bool,
    /// CONDSTORE is on: enabled, or used by a command (RFC 7162 section 3.1).
    pub condstore: bool,
    /// `ENABLE QRESYNC` was sent (RFC 7162 section 3.2.3).
    pub qresync: bool,
    /// `ENABLE UTF8=ACCEPT` was sent (RFC 6855 section 3): names and
    /// quoted strings are UTF-8 from now on.
    pub utf8_accept: bool,
    /// Failed LOGIN/AUTHENTICATE attempts in this session.
    pub auth_failures: u32,
    /// ESEARCH RETURN options of the SEARCH just parsed (RFC 4731); the
    /// executor takes them with the command.
    pub search_return: Option<SearchReturn>,
    /// The UIDs a `SEARCH RETURN (SAVE)` kept for `$` (RFC 5182); reset
    /// when a mailbox is selected or closed.
    pub saved: Option<Vec<u32>>,
    /// EMAILID/THREADID keys of the SEARCH just parsed (RFC 8474 section 6).
    pub search_ids: Option<objectid::IdFilter>,
    /// OBJECTID items taken out of the last command before parsing
    /// (`objectid.rs`), for the executor to add.
    pub extras: Extras,
    bad_in_a_row: u32,
    limits: Limits,
}

/// The command keyword of a message, for state and error messages.
fn tag_of(bytes: &[u8]) -> Option<String> {
    let word = bytes.split(|&b| b == b' ').next()?;
    let tag = std::str::from_utf8(word).ok()?;
    imap_codec::imap_types::core::Tag::validate(tag)
        .ok()
        .map(|()| tag.to_string())
}

impl Session {
    /// A new session; `tls` for implicit TLS, `tls_available` when
    /// STARTTLS can be offered.
    pub(crate) fn new(limits: Limits, tls: bool, tls_available: bool) -> Session {
        Session {
            framer: Framer::new(&limits),
            state: State::NotAuthenticated,
            tls,
            tls_available,
            rev2: false,
            condstore: false,
            qresync: false,
            auth_failures: 0,
            search_return: None,
            saved: None,
            search_ids: None,
            utf8_accept: false,
            extras: Extras::default(),
            bad_in_a_row: 0,
            limits,
        }
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Received bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.framer.feed(bytes);
    }

    /// Whether the framer holds unprocessed bytes.
    pub(crate) fn has_buffered(&self) -> bool {
        self.framer.has_buffered()
    }

    /// After STARTTLS succeeds: forget buffered plaintext, mark TLS.
    pub(crate) fn start_tls(&mut self) {
        self.framer.discard_buffered();
        self.tls = true;
        self.tls_available = false;
    }

    /// The capability list for the current state (RFC 9051 section
    /// 6.1.1): no AUTH= and LOGINDISABLED before TLS (section 6.2.3).
    pub(crate) fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 IMAP4rev2");
        if self.state == State::NotAuthenticated {
            if self.tls {
                caps.push_str(" AUTH=PLAIN");
            } else {
                if self.tls_available {
                    caps.push_str(" STARTTLS");
                }
                caps.push_str(" LOGINDISABLED");
            }
        }
        caps.push_str(
            " SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE CONDSTORE QRESYNC ACL RIGHTS=kxte LIST-EXTENDED LIST-STATUS ESEARCH SEARCHRES UTF8=ACCEPT MULTIAPPEND",
        );
        // RFC 9208 section 3, RFC 8474 section 3, RFC 5256 section 3,
        // RFC 3516 section 3.
        caps.push_str(
            " QUOTA QUOTA=RES-STORAGE OBJECTID SORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES BINARY",
        );
        caps.push_str(&format!(" APPENDLIMIT={}", self.limits.max_append_bytes));
        caps
    }

    /// The greeting (RFC 9051 section 7.1.1).
    pub(crate) fn greeting(&self) -> Vec<u8> {
        format!(
            "* OK [CAPABILITY {}] Bulwark IMAP server ready\r\n",
            self.capabilities()
        )
        .into_bytes()
    }

    /// Line mode for AUTHENTICATE responses and IDLE's DONE.
    pub(crate) fn next_line(&mut self) -> Option<Result<Vec<u8>, Vec<u8>>> {
        self.framer.set_line_mode(true);
        let frame = self.framer.next();
        self.framer.set_line_mode(false);
        match frame? {
            Frame::Line(line) => Some(Ok(line)),
            Frame::Fatal(why) => Some(Err(bye(why.text()))),
            _ => Some(Err(bye("Protocol error"))),
        }
    }

    /// Counts a BAD answer; returns the BYE to send when there were too many
    /// in a row.
    pub(crate) fn bad(&mut self) -> Option<Vec<u8>> {
        self.bad_in_a_row += 1;
        (self.bad_in_a_row >= self.limits.max_bad_commands)
            .then(|| bye("Too many invalid commands"))
    }

    /// A command went through.
    pub(crate) fn good(&mut self) {
        self.bad_in_a_row = 0;
    }

    /// The next thing to do, or `None` when more bytes are needed.
    pub(crate) fn next_input(&mut self) -> Option<Input> {
        if self.state == State::Logout {
            return None;
        }
        let frame = self.framer.next()?;
        Some(match frame {
            Frame::Continue => Input::Write(b"+ Ready for literal data\r\n".to_vec()),
            Frame::Line(_) => Input::Write(Vec::new()),
            Frame::Fatal(why) => {
                self.state = State::Logout;
                Input::Close(bye(why.text()))
            }
            Frame::Rejected { tag, why } => {
                let tag = tag.unwrap_or_else(|| "*".into());
                let reply = match why {
                    Reject::LiteralTooLarge { append: true } => {
                        out::status(&tag, "NO", Some("TOOBIG"), why.text())
                    }
                    _ => out::status(&tag, "BAD", None, why.text()),
                };
                self.after_bad(reply)
            }
            Frame::Command(bytes) => self.parse(&bytes),
        })
    }

    /// The answer to a command parsed here rather than by the codec: those
    /// are all valid only once logged in.
    fn own_parse(&mut self, parsed: Result<(String, Input), (String, String)>) -> Input {
        match parsed {
            Ok((tag, _)) if !matches!(self.state, State::Authenticated | State::Selected) => {
                self.after_bad(out::status(&tag, "BAD", None, "Log in first"))
            }
            Ok((_, input)) => input,
            Err((tag, why)) => self.after_bad(out::status(&tag, "BAD", None, &why)),
        }
    }

    fn after_bad(&mut self, mut reply: Vec<u8>) -> Input {
        match self.bad() {
            Some(bye) => {
                reply.extend_from_slice(&bye);
                self.state = State::Logout;
                Input::Close(reply)
            }
            None => Input::Write(reply),
        }
    }

    fn parse(&mut self, bytes: &[u8]) -> Input {
        if let Some(tag) = starttls(bytes) {
            return Input::StartTls(tag);
        }
        // OBJECTID items of an earlier command never leak into this one.
        self.extras = Extras::default();
        if let Some(parsed) = crate::listext::parse_multiappend(bytes) {
            return self.own_parse(parsed.map(|(tag, mailbox, items)| {
                (tag.clone(), Input::MultiAppend(tag, mailbox, items))
            }));
        }
        if let Some(parsed) = crate::listext::parse_list(bytes) {
            return self.own_parse(parsed.map(|(tag, list)| (tag.clone(), Input::List(tag, list))));
        }
        let substituted;
        let bytes =
            match crate::listext::substitute_saved(bytes, self.saved.as_deref().unwrap_or(&[])) {
                Some(command) => {
                    substituted = command;
                    substituted.as_slice()
                }
                None => bytes,
            };
        let mut search_return = None;
        let rewritten;
        let bytes = match crate::listext::split_search_return(bytes) {
            Some(Ok((options, command))) => {
                search_return = Some(options);
                rewritten = command;
                rewritten.as_slice()
            }
            Some(Err((tag, why))) => {
                return self.after_bad(out::status(&tag, "BAD", None, &why));
            }
            None => bytes,
        };
        let mut search_ids = None;
        let without_ids;
        let bytes = match objectid::take_search_ids(bytes) {
            Some(Ok((command, filter))) => {
                search_ids = Some(filter);
                without_ids = command;
                without_ids.as_slice()
            }
            Some(Err((tag, why))) => {
                return self.after_bad(out::status(&tag, "BAD", None, &why));
            }
            None => bytes,
        };
        if let Some(parsed) = crate::acl::parse_command(bytes) {
            return self
                .own_parse(parsed.map(|(tag, command)| (tag.clone(), Input::Acl(tag, command))));
        }
        let rewritten = objectid::take_items(bytes);
        self.extras = rewritten.as_ref().map(|r| r.1).unwrap_or_default();
        let bytes = rewritten.as_ref().map_or(bytes, |r| r.0.as_slice());
        let command = match CommandCodec::default().decode(bytes) {
            Ok((b"", command)) => command.into_static(),
            _ => {
                let tag = tag_of(bytes).unwrap_or_else(|| "*".into());
                return self.after_bad(out::status(
                    &tag,
                    "BAD",
                    None,
                    "Syntax error or unknown command",
                ));
            }
        };
        if let Err(text) = self.allowed(&command.body) {
            return self.after_bad(out::status(command.tag.inner(), "BAD", None, text));
        }
        self.search_return = search_return;
        self.search_ids = search_ids;
        Input::Command(command)
    }

    /// Whether `body` is valid in the current state (RFC 9051 sections
    /// 6.1 to 6.4).
    pub(crate) fn allowed(&self, body: &CommandBody<'_>) -> Result<(), &'static str> {
        use CommandBody as C;
        let state = self.state;
        let authenticated = matches!(state, State::Authenticated | State::Selected);
        match body {
            C::Capability | C::Noop | C::Logout | C::Id { .. } => Ok(()),
            C::Login { .. } | C::Authenticate { .. } => {
                if state == State::NotAuthenticated {
                    Ok(())
                } else {
                    Err("Already authenticated")
                }
            }
            C::Enable { .. } => {
                if state == State::Authenticated {
                    Ok(())
                } else {
                    Err("ENABLE is valid only in the authenticated state")
                }
            }
            C::Select { .. }
            | C::Examine { .. }
            | C::Create { .. }
            | C::Delete { .. }
            | C::Rename { .. }
            | C::Subscribe { .. }
            | C::Unsubscribe { .. }
            | C::List { .. }
            | C::Lsub { .. }
            | C::Status { .. }
            | C::Append { .. }
            | C::Namespace
            | C::GetQuota { .. }
            | C::GetQuotaRoot { .. }
            | C::SetQuota { .. }
            | C::Idle => {
                if authenticated {
                    Ok(())
                } else {
                    Err("Log in first")
                }
            }
            C::Check
            | C::Close
            | C::Unselect
            | C::Expunge
            | C::ExpungeUid { .. }
            | C::Search { .. }
            | C::Sort { .. }
            | C::Thread { .. }
            | C::Fetch { .. }
            | C::Store { .. }
            | C::Copy { .. }
            | C::Move { .. } => {
                if state == State::Selected {
                    Ok(())
                } else if authenticated {
                    Err("No mailbox selected")
                } else {
                    Err("Log in first")
                }
            }
            _ => Err("Command not supported"),
        }
    }
}

/// `* BYE text`.
pub(crate) fn bye(text: &str) -> Vec<u8> {
    out::status("*", "BYE", None, text)
}

/// `tag STARTTLS` (RFC 9051 section 6.2.1), case-insensitive.
fn starttls(bytes: &[u8]) -> Option<String> {
    let line = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))?;
    let (tag, word) = line.split_at(line.iter().position(|&b| b == b' ')?);
    if !word[1..].eq_ignore_ascii_case(b"STARTTLS") {
        return None;
    }
    tag_of(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(session: &mut Session, input: &[u8]) -> Vec<String> {
        session.feed(input);
        let mut out = Vec::new();
        while let Some(i) = session.next_input() {
            out.push(match i {
                Input::Write(b) | Input::Close(b) => String::from_utf8_lossy(&b).into_owned(),
                Input::Command(c) => format!("command {}", c.body.name()),
                Input::StartTls(tag) => format!("starttls {tag}"),
                Input::Acl(tag, command) => format!("acl {tag} {command:?}"),
                Input::List(tag, list) => format!("list {tag} {list:?}"),
                Input::MultiAppend(tag, _, items) => format!("multiappend {tag} {}", items.len()),
            });
        }
        out
    }

    #[test]
    fn capabilities_follow_tls_and_state() {
        let plain = Session::new(Limits::default(), false, true);
        let caps = plain.capabilities();
        assert!(caps.contains("STARTTLS") && caps.contains("LOGINDISABLED"));
        assert!(!caps.contains("AUTH=PLAIN"));
        let tls = Session::new(Limits::default(), true, false);
        let caps = tls.capabilities();
        assert!(caps.contains("AUTH=PLAIN") && !caps.contains("LOGINDISABLED"));
        assert!(caps.contains("APPENDLIMIT=52428800"));
        assert!(caps.contains(" CONDSTORE QRESYNC"));
    }

    #[test]
    fn wrong_state_and_garbage_get_bad() {
        let mut s = Session::new(Limits::default(), true, false);
        let got = run(
            &mut s,
            b"a1 SELECT INBOX\r\na2 FETCH 1 FLAGS\r\na3 FROB\r\n\r\na4 STARTTLS\r\na5 NOOP\r\n",
        );
        assert_eq!(
            got,
            vec![
                "a1 BAD Log in first\r\n",
                "a2 BAD Log in first\r\n",
                "a3 BAD Syntax error or unknown command\r\n",
                "* BAD Syntax error or unknown command\r\n",
                "starttls a4",
                "command NOOP",
            ]
        );
        s.state = State::Authenticated;
        let got = run(&mut s, b"b1 FETCH 1 FLAGS\r\nb2 LOGIN a b\r\n");
        assert_eq!(
            got,
            vec![
                "b1 BAD No mailbox selected\r\n",
                "b2 BAD Already authenticated\r\n"
            ]
        );
    }

    #[test]
    fn literal_limits_answer_before_reading() {
        let mut s = Session::new(Limits::default(), true, false);
        let got = run(&mut s, b"a APPEND INBOX {100000000}\r\n");
        assert_eq!(
            got,
            vec!["a NO [TOOBIG] Message larger than APPENDLIMIT\r\n"]
        );
        let got = run(&mut s, b"b LOGIN {5}\r\n");
        assert_eq!(got, vec!["+ Ready for literal data\r\n"]);
        let got = run(&mut s, b"alice {4}\r\n");
        assert_eq!(got, vec!["+ Ready for literal data\r\n"]);
        let got = run(&mut s, b"pass\r\n");
        assert_eq!(got, vec!["command LOGIN"]);
    }

    #[test]
    fn too_many_bad_commands_end_the_session() {
        let mut s = Session::new(
            Limits {
                max_bad_commands: 3,
                ..Limits::default()
            },
            true,
            false,
        );
        let got = run(&mut s, b"a x\r\nb x\r\nc x\r\nd NOOP\r\n");
        assert_eq!(got.len(), 3);
        assert!(got[2].contains("* BYE Too many invalid commands"));
        assert_eq!(s.state, State::Logout);
    }

    #[test]
    fn rfc_9051_examples_parse() {
        // Commands from RFC 9051 section 6 examples.
        let mut s = Session::new(Limits::default(), true, false);
        s.state = State::Selected;
        for line in [
            "a002 NOOP",
            "A142 SELECT INBOX",
            "A932 EXAMINE blurdybloop",
            "A003 CREATE owatagusiam/",
            "A683 DELETE blurdybloop",
            "A101 LIST \"\" \"\"",
            "A102 LIST #news.comp.mail.misc \"\"",
            "A202 LIST ~/Mail/ %",
            "A042 STATUS blurdybloop (UIDNEXT MESSAGES)",
            "A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
            "A003 STORE 2:4 +FLAGS (\\Deleted)",
            "A003 COPY 2:4 MEETING",
            "A999 UID FETCH 4827313:4828442 FLAGS",
            "A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"",
            "A284 SEARCH CHARSET UTF-8 TEXT {12+}",
        ] {
            let got = run(&mut s, format!("{line}\r\n").as_bytes());
            if line.starts_with("A282") {
                // RETURN is taken off before the codec (listext.rs).
                assert_eq!(got, vec!["command SEARCH"], "{line}");
                assert!(s.search_return.take().is_some_and(|r| r.min && r.count));
            } else if line.starts_with("A284") {
                assert!(got.is_empty(), "{line}: {got:?}");
                let got = run(&mut s, "работа\r\n".as_bytes());
                assert_eq!(got, vec!["command SEARCH"], "{line}");
            } else {
                assert_eq!(got.len(), 1, "{line}: {got:?}");
                assert!(got[0].starts_with("command "), "{line}: {got:?}");
            }
        }
    }

    #[test]
    fn extension_commands_parse() {
        // RFC 5256, RFC 9208, RFC 8474 (through the pre-parse) and RFC 3516.
        let mut s = Session::new(Limits::default(), true, false);
        s.state = State::Selected;
        for line in [
            "a SORT (SUBJECT REVERSE DATE) UTF-8 ALL",
            "a UID SORT (ARRIVAL CC FROM TO SIZE) US-ASCII SINCE 1-Feb-1994",
            "a THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000",
            "a UID THREAD REFERENCES US-ASCII TEXT \"gewp\"",
            "a GETQUOTAROOT INBOX",
            "a GETQUOTA \"\"",
            "a SETQUOTA \"\" (STORAGE 512)",
            "a FETCH 1 (EMAILID THREADID)",
            "a UID FETCH 1:* (FLAGS EMAILID)",
            "a STATUS INBOX (MAILBOXID MESSAGES)",
            "a FETCH 1 (BINARY[1] BINARY.PEEK[1.2]<0.10> BINARY.SIZE[2])",
            "a APPEND INBOX ~{3+}",
        ] {
            let mut got = run(&mut s, format!("{line}\r\n").as_bytes());
            if line.ends_with('}') {
                got = run(&mut s, b"a\x00b\r\n");
            }
            assert_eq!(got.len(), 1, "{line}: {got:?}");
            assert!(got[0].starts_with("command "), "{line}: {got:?}");
        }
        let got = run(&mut s, b"b FETCH 1 (EMAILID)\r\n");
        assert_eq!(got, vec!["command FETCH"]);
        assert!(s.extras.email_id && s.extras.placeholder);
        let got = run(&mut s, b"c FETCH 1 (FLAGS)\r\n");
        assert_eq!(got, vec!["command FETCH"]);
        assert_eq!(s.extras, Extras::default());
    }

    #[test]
    fn rfc_7162_examples_parse() {
        // Commands from RFC 7162 sections 3.1 and 3.2 examples.
        let mut s = Session::new(Limits::default(), true, false);
        s.state = State::Authenticated;
        for line in [
            "t1 ENABLE CONDSTORE QRESYNC",
            "A142 SELECT INBOX (CONDSTORE)",
            "A03 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
            "B01 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997:30000)))",
            "A042 STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ)",
        ] {
            let got = run(&mut s, format!("{line}\r\n").as_bytes());
            assert_eq!(got.len(), 1, "{line}: {got:?}");
            assert!(got[0].starts_with("command "), "{line}: {got:?}");
        }
        s.state = State::Selected;
        for line in [
            "a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)",
            "d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
            "s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
            "a FETCH 1:* (FLAGS MODSEQ)",
            "A02 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
            "a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338",
            "t SEARCH OR NOT MODSEQ 720162338 LARGER 50000",
        ] {
            let got = run(&mut s, format!("{line}\r\n").as_bytes());
            assert_eq!(got.len(), 1, "{line}: {got:?}");
            assert!(got[0].starts_with("command "), "{line}: {got:?}");
        }
    }
}

/// Deterministic robustness runs over hostile fragments: whatever arrives,
/// in whatever chunks, the session answers without panicking and keeps
/// its buffers bounded. (A cargo-fuzz target is still to come.)
#[cfg(test)]
mod robustness {
    use super::*;

    const PIECES: &[&[u8]] = &[
        b"a",
        b" ",
        b"SELECT",
        b"FETCH",
        b"APPEND",
        b"LOGIN",
        b"UID",
        b"SEARCH",
        b"{5}\r\n",
        b"{3+}\r\n",
        b"{0}\r\n",
        b"{99999999999}\r\n",
        b"~{2}\r\n",
        b"(",
        b")",
        b"[",
        b"]",
        b"\"",
        b"\\",
        b"\r\n",
        b"\n",
        b"\r",
        b"*",
        b"1:*",
        b"4294967295",
        b"0",
        b"BODY[",
        b"HEADER.FIELDS (",
        b"\xff\xfe",
        b"&",
        b"-",
        b"INBOX",
        b"%",
        b",",
        b"DONE",
        b"IDLE",
        b"STARTTLS",
        b"NIL",
        b"\x00",
    ];

    #[test]
    fn random_fragments_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let limits = Limits {
            max_line_bytes: 512,
            max_literal_bytes: 64,
            max_command_bytes: 2048,
            ..Limits::default()
        };
        for _ in 0..2000 {
            let mut s = Session::new(limits.clone(), true, false);
            s.state = match next() % 3 {
                0 => State::NotAuthenticated,
                1 => State::Authenticated,
                _ => State::Selected,
            };
            let mut input = Vec::new();
            for _ in 0..(next() % 40) {
                input.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            let mut at = 0;
            while at < input.len() {
                let take = 1 + (next() % 17) as usize;
                let end = (at + take).min(input.len());
                s.feed(&input[at..end]);
                at = end;
                while let Some(i) = s.next_input() {
                    if matches!(i, Input::Close(_)) {
                        break;
                    }
                }
                assert!(
                    s.framer.buffered_bytes() <= 2048 + 2 * 512,
                    "buffers unbounded"
                );
            }
        }
    }

    #[test]
    fn random_messages_render_without_panic() {
        use crate::fetch;
        use bulwark_core::{BlobId, EmailId, ModSeq};
        let (_, cmd) = CommandCodec::default()
            .decode(b"a FETCH 1 (ENVELOPE BODYSTRUCTURE BODY[] BODY[1] BODY[2.1] BODY[1.MIME] BODY[2.HEADER] BODY[HEADER.FIELDS (FROM)] BODY[TEXT]<3.10> BINARY[1] BINARY.SIZE[2] BINARY.PEEK[1.1]<0.3>)\r\n")
            .expect("parses");
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = cmd.body
        else {
            panic!("not a fetch")
        };
        let plan = fetch::plan(&macro_or_item_names, true).expect("plan");
        let pieces: &[&[u8]] = &[
            b"Content-Type: multipart/mixed; boundary=B\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"\r\n",
            b"--B\r\n",
            b"--B--\r\n",
            b"From: a@b\r\n",
            b"To: \"x\" <y@z>, g: ;\r\n",
            b"Subject: =?utf-8?b?w6k=?=\r\n",
            b" folded\r\n",
            b"body\r\n",
            b"\n",
            b"\xff",
            b":",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Disposition: attachment; a=\r\n",
        ];
        let mut seed: u64 = 42;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut raw = Vec::new();
            for _ in 0..(next() % 30) {
                raw.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let entry = crate::listing::Entry {
                uid: 1,
                email: EmailId(1),
                modseq: ModSeq(1),
                keywords: Vec::new().into(),
                size: raw.len() as u64,
                received_at: 0,
                blob: BlobId([0; 32]),
            };
            let out = fetch::render(
                1,
                &entry,
                &plan,
                false,
                &fetch::Source {
                    raw: Some(&raw),
                    ..Default::default()
                },
            );
            assert!(out.ends_with(b")\r\n"));
        }
    }
}

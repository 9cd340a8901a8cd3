//! TOML text to [`Config`], with errors that name the file, the key and the
//! position.

use std::path::Path;

use crate::locate::{self, Segment};
use crate::{Config, ConfigError};

/// Parses `text` into a [`Config`] without semantic validation.
pub(crate) fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    // A first pass over the bare syntax, so that syntax errors are reported
    // as such and not as a problem with some key.
    if let Err(e) = text.parse::<toml::Table>() {
        let position = e
            .span()
            .map(|s| position(text, s.start))
            .unwrap_or_default();
        return Err(ConfigError {
            file: file.to_path_buf(),
            key: None,
            message: format!("TOML syntax error{position}: {}", clean(e.message())),
        });
    }
    toml::from_str::<Config>(text).map_err(|e| {
        let message = clean(e.message());
        let span = e.span();
        let (path, offset) = match backticked_after(&message, "missing field ") {
            // A missing key has no position of its own: the span, if any, is
            // that of the table lacking it, and none that matches means the
            // root table.
            Some(field) => {
                let table = span.as_ref().and_then(|s| locate::table_with_span(text, s));
                let offset = table.as_ref().and(span.as_ref()).map(|s| s.start);
                let mut path = table.unwrap_or_default();
                path.push(Segment::Key(field.to_owned()));
                (path, offset)
            }
            None => {
                let offset = span.map(|s| s.start);
                (
                    offset
                        .and_then(|o| locate::path_at(text, o))
                        .unwrap_or_default(),
                    offset,
                )
            }
        };
        let key = (!path.is_empty()).then(|| locate::render_path(&path));
        let position = offset.map(|o| position(text, o)).unwrap_or_default();
        ConfigError {
            file: file.to_path_buf(),
            key,
            message: format!("{message}{position}"),
        }
    })
}

/// ` (line L, column C)` for byte `offset` of `text`, both counted from 1.
fn position(text: &str, offset: usize) -> String {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    format!(" at line {line}, column {column}")
}

/// Puts the toml crate's message, which may span lines, on one line.
fn clean(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// For `missing field `x``, returns `x`.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_from_one() {
        let text = "ab\ncdé f\n";
        assert_eq!(position(text, 0), " at line 1, column 1");
        assert_eq!(position(text, 3), " at line 2, column 1");
        assert_eq!(
            position(text, text.find('f').expect("present")),
            " at line 2, column 5"
        );
        assert_eq!(position(text, 1000), " at line 3, column 1");
    }

    #[test]
    fn extracts_missing_field() {
        assert_eq!(
            backticked_after("missing field `hostname`", "missing field "),
            Some("hostname")
        );
        assert_eq!(
            backticked_after("unknown field `x`", "missing field "),
            None
        );
    }
}

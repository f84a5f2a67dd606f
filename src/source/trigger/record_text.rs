//! Parsing of a row's composite text form, `(1,abc,,"x, ""y""")`, as
//! Postgres's `record_out` writes it: statement capture keeps each changed
//! row that way, and the fields are each column's output text, the same
//! text `hstore(record)` and logical replication give.

use thiserror::Error;

/// A composite text that `record_out` cannot have written.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed row text at byte {at}: {reason}")]
pub struct RecordTextError {
    /// The byte offset where parsing stopped.
    pub at: usize,
    /// What was expected there.
    pub reason: &'static str,
}

fn fail(at: usize, reason: &'static str) -> RecordTextError {
    RecordTextError { at, reason }
}

/// The fields of a composite text, `None` for SQL NULL (an empty unquoted
/// field), in order. `()` is one NULL field: a composite of no columns
/// reads the same, and the caller knows how many columns it expects.
///
/// `record_out` quotes a field that is empty or holds a quote, backslash,
/// parenthesis, comma or white space, doubling quotes and backslashes
/// inside; `record_in` also accepts a backslash escaping the next byte, so
/// that is read too.
pub fn parse_record(text: &str) -> Result<Vec<Option<String>>, RecordTextError> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'(') {
        return Err(fail(0, "expected '('"));
    }
    let mut fields = Vec::new();
    let mut at = 1;
    loop {
        let (field, next) = parse_field(bytes, at)?;
        fields.push(field);
        at = next;
        match bytes.get(at) {
            Some(b',') => at += 1,
            Some(b')') => {
                if at + 1 != bytes.len() {
                    return Err(fail(at + 1, "text after ')'"));
                }
                return Ok(fields);
            }
            Some(_) => return Err(fail(at, "expected ',' or ')'")),
            None => return Err(fail(at, "missing ')'")),
        }
    }
}

/// One field starting at `start`: its value and the offset of the byte
/// after it (a ',' or ')').
fn parse_field(bytes: &[u8], start: usize) -> Result<(Option<String>, usize), RecordTextError> {
    let mut value = Vec::new();
    let mut at = start;
    let mut quoted_any = false;
    let mut in_quotes = false;
    while let Some(&byte) = bytes.get(at) {
        if in_quotes {
            match byte {
                b'"' if bytes.get(at + 1) == Some(&b'"') => {
                    value.push(b'"');
                    at += 2;
                }
                b'"' => {
                    in_quotes = false;
                    at += 1;
                }
                b'\\' => {
                    let escaped = bytes
                        .get(at + 1)
                        .ok_or_else(|| fail(at, "backslash at end"))?;
                    value.push(*escaped);
                    at += 2;
                }
                _ => {
                    value.push(byte);
                    at += 1;
                }
            }
            continue;
        }
        match byte {
            b',' | b')' => break,
            b'"' => {
                in_quotes = true;
                quoted_any = true;
                at += 1;
            }
            b'\\' => {
                let escaped = bytes
                    .get(at + 1)
                    .ok_or_else(|| fail(at, "backslash at end"))?;
                value.push(*escaped);
                at += 2;
            }
            _ => {
                value.push(byte);
                at += 1;
            }
        }
    }
    if in_quotes {
        return Err(fail(at, "unterminated quotes"));
    }
    if value.is_empty() && !quoted_any {
        return Ok((None, at));
    }
    // Splitting happens only at ASCII bytes, so the pieces of valid UTF-8
    // stay valid UTF-8.
    let value = String::from_utf8(value).map_err(|_| fail(start, "field is not UTF-8"))?;
    Ok((Some(value), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    #[test]
    fn plain_fields() {
        assert_eq!(
            parse_record("(1,abc,2.50)"),
            Ok(vec![some("1"), some("abc"), some("2.50")])
        );
    }

    #[test]
    fn empty_unquoted_field_is_null_and_quoted_empty_is_empty_text() {
        assert_eq!(
            parse_record("(1,,\"\",)"),
            Ok(vec![some("1"), None, some(""), None])
        );
    }

    #[test]
    fn quoted_fields_keep_commas_parentheses_spaces_and_doubled_quotes() {
        assert_eq!(
            parse_record(r#"(7,"x, ""y""","(a)"," lead","2020-01-01 00:00:00+00")"#),
            Ok(vec![
                some("7"),
                some(r#"x, "y""#),
                some("(a)"),
                some(" lead"),
                some("2020-01-01 00:00:00+00"),
            ])
        );
    }

    #[test]
    fn doubled_backslashes_and_backslash_escapes() {
        assert_eq!(
            parse_record(r#"("a\\b",c\,d,"e\"f")"#),
            Ok(vec![some(r"a\b"), some("c,d"), some(r#"e"f"#)])
        );
    }

    #[test]
    fn nested_composite_and_array_text_come_back_as_written() {
        // A column holding a composite and one holding an array: their own
        // text forms, quoted once more by the outer record.
        assert_eq!(
            parse_record(r#"(1,"(2,""b c"")","{1,2,""x y""}")"#),
            Ok(vec![
                some("1"),
                some(r#"(2,"b c")"#),
                some(r#"{1,2,"x y"}"#)
            ])
        );
    }

    #[test]
    fn multibyte_text() {
        assert_eq!(
            parse_record("(\"grüße, 世界\",ü)"),
            Ok(vec![some("grüße, 世界"), some("ü")])
        );
    }

    #[test]
    fn empty_parentheses_are_one_null() {
        assert_eq!(parse_record("()"), Ok(vec![None]));
    }

    #[test]
    fn malformed_texts_are_refused() {
        assert_eq!(parse_record(""), Err(fail(0, "expected '('")));
        assert_eq!(parse_record("1,2)"), Err(fail(0, "expected '('")));
        assert_eq!(parse_record("(1,2"), Err(fail(4, "missing ')'")));
        assert_eq!(parse_record("(1,\"2)"), Err(fail(6, "unterminated quotes")));
        assert_eq!(parse_record("(1)x"), Err(fail(3, "text after ')'")));
        assert_eq!(
            parse_record("(\"a\"b\"c)"),
            Err(fail(8, "unterminated quotes"))
        );
        assert_eq!(parse_record("(a\\"), Err(fail(2, "backslash at end")));
    }
}

//! The field path (`routes[0].match.headers.end-user`) at a byte offset of a
//! JSON text.
//!
//! A configuration error names its field. Tracking the path through every
//! deserializer (as `serde_path_to_error` does) wraps each type's visitor in
//! generic code, which was the largest single part of every filter's and the
//! JavaScript package's `.wasm`. serde_json already reports where it stopped;
//! walking the text up to there gives the same path for a fraction of the code.

/// One open container on the way to the offset.
enum Frame {
    /// An object, and the key whose value is being read (after its `:`, or
    /// right after the key itself for an error about the key).
    Object(Option<String>),
    /// An array, and the index of the element begun last.
    Array(Option<usize>),
}

/// The path of the value being read when a parser stopped at `offset` (the
/// number of bytes it had consumed): keys joined by `.`, indexes as `[i]`,
/// empty at the top level. `syntax` says the parser refused the text there
/// rather than a value's type or content.
pub fn path_at(text: &[u8], offset: usize, syntax: bool) -> String {
    let end = offset.min(text.len());
    let mut stack: Vec<Frame> = Vec::new();
    let mut key_next = false;
    // After `[`, `:` or an array's `,`: the value there has not begun. The
    // parser reports a value of the wrong kind (`{` for a string) before
    // reading it, so stopping here means that value.
    let mut value_next = false;
    // The last thing read was a whole string value or `true`/`false`/`null`.
    let mut plain_value_ends = false;
    let mut i = 0;
    while i < end {
        let byte = text[i];
        if !b" \t\n\r".contains(&byte) {
            plain_value_ends = false;
        }
        match byte {
            b'{' => {
                begin_value(&mut stack);
                value_next = false;
                stack.push(Frame::Object(None));
                key_next = true;
                i += 1;
            }
            b'[' => {
                begin_value(&mut stack);
                stack.push(Frame::Array(None));
                key_next = false;
                value_next = true;
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                key_next = false;
                value_next = false;
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object(key)) => {
                        *key = None;
                        key_next = true;
                    }
                    _ => value_next = true,
                }
                i += 1;
            }
            b'"' => {
                let close = string_end(text, i);
                match stack.last_mut() {
                    Some(Frame::Object(key)) if key_next => {
                        *key = Some(unescape(&text[i..close]));
                        key_next = false;
                    }
                    _ => {
                        begin_value(&mut stack);
                        value_next = false;
                        plain_value_ends = close <= end;
                    }
                }
                i = close;
            }
            b':' => {
                value_next = true;
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            _ => {
                // A number, `true`, `false` or `null`, up to its delimiter.
                begin_value(&mut stack);
                value_next = false;
                let start = i;
                while i < end && !b",]}: \t\n\r\"".contains(&text[i]) {
                    i += 1;
                }
                let word = &text[start..i];
                plain_value_ends = matches!(word, b"true" | b"false" | b"null")
                    && text.get(i).is_none_or(|b| b",]}: \t\n\r".contains(b));
            }
        }
    }
    let next = text[end..].iter().find(|b| !b" \t\n\r".contains(b));
    if value_next && next.is_some_and(|b| !b",]}".contains(b)) {
        begin_value(&mut stack);
    }
    // A syntax error before a comma after a string or word: an enum's
    // one-key object (`{"exact": "a", "prefix": "b"}`) given a second key.
    // The object is at fault, not the value its first key holds. (A number
    // or an object there is an enum refusing that value itself.)
    if syntax && !value_next && plain_value_ends && next == Some(&b',') {
        if let Some(Frame::Object(key)) = stack.last_mut() {
            *key = None;
        }
    }
    render(&stack)
}

/// Counts an array element begun (objects' values are counted by key).
fn begin_value(stack: &mut [Frame]) {
    if let Some(Frame::Array(index)) = stack.last_mut() {
        *index = Some(index.map_or(0, |i| i + 1));
    }
}

/// The offset just past the string starting at `open` (its opening quote),
/// or the end of the text for one left open.
fn string_end(text: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    text.len()
}

/// A key as the parser read it (escapes decoded); a key that does not
/// decode is shown as written.
fn unescape(quoted: &[u8]) -> String {
    serde_json::from_slice::<String>(quoted).unwrap_or_else(|_| {
        let inner = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        String::from_utf8_lossy(inner).into_owned()
    })
}

fn render(stack: &[Frame]) -> String {
    let mut out = String::new();
    for frame in stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Frame::Array(Some(index)) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Frame::Object(None) | Frame::Array(None) => {}
        }
    }
    out
}

/// The byte offset serde_json's error points at (it counts a line's column
/// in bytes from 0 after the newline; line 0 means no position).
pub fn error_offset(text: &[u8], err: &serde_json::Error) -> usize {
    let mut line_start = 0;
    for _ in 1..err.line() {
        match text[line_start..].iter().position(|&b| b == b'\n') {
            Some(n) => line_start += n + 1,
            None => return text.len(),
        }
    }
    line_start + err.column()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, marker: &str) -> String {
        let offset = text.find(marker).unwrap() + marker.len();
        path_at(text.as_bytes(), offset, false)
    }

    #[test]
    fn keys_and_indexes_down_to_the_offset() {
        let t = r#"{"routes": [{"a": 1}, {"split": [{"weight": -1}]}], "b": "x"}"#;
        assert_eq!(at(t, "-1"), "routes[1].split[0].weight");
        assert_eq!(at(t, r#""split""#), "routes[1].split");
        assert_eq!(at(t, r#"-1}"#), "routes[1].split[0]");
        assert_eq!(at(t, r#"-1}]}]"#), "routes");
        assert_eq!(at(t, r#""x""#), "b");
        assert_eq!(at(t, r#""x"}"#), "");
        assert_eq!(path_at(b"", 0, false), "");
    }

    #[test]
    fn strings_hide_their_brackets_and_keys_are_unescaped() {
        let t = r#"{"a\"]{": ["],[", {"k\u0041": true}]}"#;
        assert_eq!(at(t, "true"), r#"a"]{[1].kA"#);
    }

    #[test]
    fn offsets_come_from_serde_json_positions() {
        let t = b"{\n  \"a\": [1,\n  \"x\"]\n}";
        let err =
            serde_json::from_slice::<std::collections::BTreeMap<String, Vec<u32>>>(t).unwrap_err();
        assert_eq!(path_at(t, error_offset(t, &err), err.is_syntax()), "a[1]");
    }
}

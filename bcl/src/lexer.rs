//! Lexer: source text to tokens with spans. Comments are `#`, `//` and `/* ... */`.

use crate::diag::{Error, Result, Span};
use crate::value::{Quantity, Unit};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    Num(Quantity),
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Semi,
    Dot,
    Assign,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    Eof,
}

impl Tok {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(_) => "a string".into(),
            Tok::Num(_) => "a number".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Semi => "`;`".into(),
            Tok::Dot => "`.`".into(),
            Tok::Assign => "`=`".into(),
            Tok::Plus => "`+`".into(),
            Tok::Minus => "`-`".into(),
            Tok::Star => "`*`".into(),
            Tok::Slash => "`/`".into(),
            Tok::Percent => "`%`".into(),
            Tok::EqEq => "`==`".into(),
            Tok::NotEq => "`!=`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
            Tok::AndAnd => "`&&`".into(),
            Tok::OrOr => "`||`".into(),
            Tok::Bang => "`!`".into(),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Unit suffixes a number may carry, for the "unknown unit" hint.
const UNIT_NAMES: [&str; 14] = [
    "m", "B", "K", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", "ms", "s", "h", "",
];

fn unit_of(suffix: &str) -> Option<(Unit, f64)> {
    Some(match suffix {
        "" => (Unit::Plain, 1.0),
        "m" => (Unit::Milli, 1.0),
        "B" => (Unit::Bytes, 1.0),
        "K" => (Unit::Bytes, 1e3),
        "M" => (Unit::Bytes, 1e6),
        "G" => (Unit::Bytes, 1e9),
        "T" => (Unit::Bytes, 1e12),
        "Ki" => (Unit::Bytes, 1024.0),
        "Mi" => (Unit::Bytes, 1024.0 * 1024.0),
        "Gi" => (Unit::Bytes, 1024.0 * 1024.0 * 1024.0),
        "Ti" => (Unit::Bytes, 1024.0 * 1024.0 * 1024.0 * 1024.0),
        "ms" => (Unit::Seconds, 1e-3),
        "s" => (Unit::Seconds, 1.0),
        "h" => (Unit::Seconds, 3600.0),
        _ => return None,
    })
}

pub(crate) fn lex(file: u32, text: &str) -> Result<Vec<Token>> {
    let mut lexer = Lexer {
        file,
        text,
        bytes: text.as_bytes(),
        pos: 0,
        out: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.out)
}

struct Lexer<'a> {
    file: u32,
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: Vec<Token>,
}

impl Lexer<'_> {
    fn span(&self, start: usize) -> Span {
        Span::new(self.file, start, self.pos)
    }

    fn peek_at(&self, offset: usize) -> u8 {
        self.bytes.get(self.pos + offset).copied().unwrap_or(0)
    }

    fn push(&mut self, tok: Tok, start: usize) {
        let span = self.span(start);
        self.out.push(Token { tok, span });
    }

    fn run(&mut self) -> Result<()> {
        while self.pos < self.bytes.len() {
            let start = self.pos;
            let c = self.bytes[self.pos];
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'#' => self.skip_line(),
                b'/' if self.peek_at(1) == b'/' => self.skip_line(),
                b'/' if self.peek_at(1) == b'*' => self.skip_block_comment()?,
                b'\'' | b'"' => self.string(c)?,
                b'0'..=b'9' => self.number()?,
                b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                    while self.peek_at(0).is_ascii_alphanumeric() || self.peek_at(0) == b'_' {
                        self.pos += 1;
                    }
                    let ident = self.text[start..self.pos].to_string();
                    self.push(Tok::Ident(ident), start);
                }
                _ => {
                    let two = [c, self.peek_at(1)];
                    let (tok, len) = match &two {
                        b"==" => (Tok::EqEq, 2),
                        b"!=" => (Tok::NotEq, 2),
                        b"<=" => (Tok::Le, 2),
                        b">=" => (Tok::Ge, 2),
                        b"&&" => (Tok::AndAnd, 2),
                        b"||" => (Tok::OrOr, 2),
                        _ => match c {
                            b'{' => (Tok::LBrace, 1),
                            b'}' => (Tok::RBrace, 1),
                            b'[' => (Tok::LBracket, 1),
                            b']' => (Tok::RBracket, 1),
                            b'(' => (Tok::LParen, 1),
                            b')' => (Tok::RParen, 1),
                            b',' => (Tok::Comma, 1),
                            b';' => (Tok::Semi, 1),
                            b'.' => (Tok::Dot, 1),
                            b'=' => (Tok::Assign, 1),
                            b'+' => (Tok::Plus, 1),
                            b'-' => (Tok::Minus, 1),
                            b'*' => (Tok::Star, 1),
                            b'/' => (Tok::Slash, 1),
                            b'%' => (Tok::Percent, 1),
                            b'<' => (Tok::Lt, 1),
                            b'>' => (Tok::Gt, 1),
                            b'!' => (Tok::Bang, 1),
                            _ => return Err(self.unexpected_char(start)),
                        },
                    };
                    self.pos += len;
                    self.push(tok, start);
                }
            }
        }
        let end = self.bytes.len();
        self.out.push(Token {
            tok: Tok::Eof,
            span: Span::new(self.file, end, end),
        });
        Ok(())
    }

    fn unexpected_char(&self, start: usize) -> Error {
        let ch = self.text[start..].chars().next().unwrap_or('?');
        let end = start + ch.len_utf8();
        let err = Error::new(
            Span::new(self.file, start, end),
            format!("unexpected character {ch:?}"),
        );
        match ch {
            '\u{2018}' | '\u{2019}' | '\u{201c}' | '\u{201d}' => {
                err.hint("use straight quotes ' or \" around strings")
            }
            ':' => err.hint("fields are set with `=`, as in `replicas = 3`"),
            _ => err,
        }
    }

    fn skip_line(&mut self) {
        while self.pos < self.bytes.len() && self.bytes[self.pos] != b'\n' {
            self.pos += 1;
        }
    }

    fn skip_block_comment(&mut self) -> Result<()> {
        let start = self.pos;
        self.pos += 2;
        while self.pos < self.bytes.len() {
            if self.bytes[self.pos] == b'*' && self.peek_at(1) == b'/' {
                self.pos += 2;
                return Ok(());
            }
            self.pos += 1;
        }
        Err(Error::new(
            Span::new(self.file, start, start + 2),
            "this comment is never closed",
        )
        .hint("end a block comment with */"))
    }

    fn string(&mut self, quote: u8) -> Result<()> {
        let start = self.pos;
        self.pos += 1;
        let mut value = String::new();
        loop {
            let Some(ch) = self.text[self.pos..].chars().next() else {
                return Err(self.unterminated(start, quote));
            };
            match ch {
                '\n' => return Err(self.unterminated(start, quote)),
                '\\' => {
                    let esc_start = self.pos;
                    self.pos += 1;
                    let Some(e) = self.text[self.pos..].chars().next() else {
                        return Err(self.unterminated(start, quote));
                    };
                    self.pos += e.len_utf8();
                    value.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        '\\' => '\\',
                        '\'' => '\'',
                        '"' => '"',
                        _ => {
                            return Err(Error::new(
                                self.span(esc_start),
                                format!("unknown escape `\\{e}` in a string"),
                            )
                            .hint("escapes are \\n \\t \\r \\0 \\\\ \\' and \\\"; write a backslash as \\\\"))
                        }
                    });
                }
                c if c as u32 == u32::from(quote) => {
                    self.pos += 1;
                    self.push(Tok::Str(value), start);
                    return Ok(());
                }
                c => {
                    self.pos += c.len_utf8();
                    value.push(c);
                }
            }
        }
    }

    fn unterminated(&self, start: usize, quote: u8) -> Error {
        let q = quote as char;
        Error::new(
            Span::new(self.file, start, start + 1),
            "this string is never closed",
        )
        .hint(format!(
            "end it with {q} on the same line; write a line break inside a string as \\n"
        ))
    }

    fn number(&mut self) -> Result<()> {
        let start = self.pos;
        let mut digits = String::new();
        let mut seen_dot = false;
        while self.pos < self.bytes.len() {
            let c = self.bytes[self.pos];
            if c.is_ascii_digit() {
                digits.push(c as char);
            } else if c == b'_' {
                // Digit separator: 1_000_000.
            } else if c == b'.' && !seen_dot && self.peek_at(1).is_ascii_digit() {
                seen_dot = true;
                digits.push('.');
            } else {
                break;
            }
            self.pos += 1;
        }
        let suffix_start = self.pos;
        while self.peek_at(0).is_ascii_alphabetic() {
            self.pos += 1;
        }
        let suffix = &self.text[suffix_start..self.pos];
        let Some((unit, scale)) = unit_of(suffix) else {
            let hint = match suffix {
                "k" | "KB" | "kB" => "write kilobytes as K (1000) or Ki (1024)".to_string(),
                "Mb" | "MB" | "mb" => "write megabytes as M (10^6) or Mi (2^20)".to_string(),
                "Gb" | "GB" | "gb" => "write gigabytes as G (10^9) or Gi (2^30)".to_string(),
                "min" => "write minutes as m (5m)".to_string(),
                "sec" => "write seconds as s (30s)".to_string(),
                _ => format!(
                    "units are {}",
                    UNIT_NAMES
                        .iter()
                        .filter(|u| !u.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            };
            return Err(Error::new(
                Span::new(self.file, suffix_start, self.pos),
                format!("unknown unit `{suffix}` after a number"),
            )
            .hint(hint));
        };
        let amount: f64 = digits.parse().unwrap_or(f64::INFINITY);
        let value = amount * scale;
        if !value.is_finite() {
            return Err(Error::new(self.span(start), "this number is too large"));
        }
        self.push(Tok::Num(Quantity { value, unit }), start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        lex(0, text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers_carry_their_units() {
        assert_eq!(
            toks("500m 1.5Gi 100M 30s 2h 1_000"),
            vec![
                Tok::Num(Quantity {
                    value: 500.0,
                    unit: Unit::Milli
                }),
                Tok::Num(Quantity {
                    value: 1.5 * 1024.0 * 1024.0 * 1024.0,
                    unit: Unit::Bytes
                }),
                Tok::Num(Quantity {
                    value: 1e8,
                    unit: Unit::Bytes
                }),
                Tok::Num(Quantity {
                    value: 30.0,
                    unit: Unit::Seconds
                }),
                Tok::Num(Quantity {
                    value: 7200.0,
                    unit: Unit::Seconds
                }),
                Tok::Num(Quantity {
                    value: 1000.0,
                    unit: Unit::Plain
                }),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn comments_are_skipped_and_strings_unescaped() {
        assert_eq!(
            toks("# c\n// d\n/* e\n */ 'a\\'b' \"x\\ny\""),
            vec![Tok::Str("a'b".into()), Tok::Str("x\ny".into()), Tok::Eof]
        );
    }

    #[test]
    fn bad_input_is_reported_where_it_is() {
        let e = lex(0, "x = 10kb").unwrap_err();
        assert_eq!(e.message, "unknown unit `kb` after a number");
        assert_eq!((e.span.start, e.span.end), (6, 8));
        let e = lex(0, "x = 'abc\n'").unwrap_err();
        assert_eq!(e.message, "this string is never closed");
        assert_eq!(e.span.start, 4);
        let e = lex(0, "/* open").unwrap_err();
        assert_eq!(e.message, "this comment is never closed");
        let e = lex(0, "a = 'x\\q'").unwrap_err();
        assert_eq!(e.message, "unknown escape `\\q` in a string");
        let e = lex(0, "a = \u{2018}x\u{2019}").unwrap_err();
        assert!(e.hint.unwrap().contains("straight quotes"));
    }
}

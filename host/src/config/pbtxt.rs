//! Protobuf text-format parser (the `config.pbtxt` syntax) driven by message reflection.
//!
//! `protobuf::text_format` of rust-protobuf 3.7 rejects syntax that Triton's C++ parser accepts
//! and real `config.pbtxt` files use all the time (`dims: [ 3, 224, 224 ]`, `input [ {...} ]`,
//! `value: { ... }`, commas between fields), so this module implements the text format as the
//! C++ library does: optional `:` before messages, list syntax, `{}`/`<>` delimiters, `#`
//! comments, `,`/`;` separators, enum names or numbers, C-style escapes, adjacent string
//! concatenation. Like C++ it rejects unknown fields, a singular field given twice and two
//! members of one oneof.

use std::collections::HashSet;

use protobuf::reflect::{
    FieldDescriptor, MessageDescriptor, ReflectValueBox, RuntimeFieldType, RuntimeType,
};
use protobuf::{MessageDyn, MessageFull};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(String),
    Str(Vec<u8>),
    Sym(char),
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    col: usize,
}

/// A parse error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbtxtError(pub String);

impl std::fmt::Display for PbtxtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type R<T> = Result<T, PbtxtError>;

impl<'a> Lexer<'a> {
    fn err<T>(&self, msg: impl std::fmt::Display) -> R<T> {
        Err(PbtxtError(format!("{}:{}: {msg}", self.line, self.col)))
    }
    fn bump(&mut self) -> Option<u8> {
        let c = *self.s.get(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while let Some(c) = self.bump() {
                    if c == b'\n' {
                        break;
                    }
                }
            } else if c.is_ascii_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }
    fn next(&mut self) -> R<Option<Tok>> {
        self.skip_ws();
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                self.bump();
            }
            return Ok(Some(Tok::Ident(
                String::from_utf8_lossy(&self.s[start..self.pos]).into_owned(),
            )));
        }
        if c.is_ascii_digit()
            || c == b'.' && self.s.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
            || c == b'-'
        {
            let start = self.pos;
            self.bump();
            while self.peek().is_some_and(|c| {
                c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'+' || c == b'-'
            }) {
                // `1e-5` needs '-'/'+' after 'e' only.
                let c = self.peek().unwrap_or(0);
                if (c == b'+' || c == b'-') && !matches!(self.s[self.pos - 1], b'e' | b'E') {
                    break;
                }
                self.bump();
            }
            return Ok(Some(Tok::Num(
                String::from_utf8_lossy(&self.s[start..self.pos]).into_owned(),
            )));
        }
        if c == b'"' || c == b'\'' {
            let mut out = Vec::new();
            loop {
                let q = self.bump().unwrap_or(b'"');
                loop {
                    let Some(c) = self.bump() else {
                        return self.err("unterminated string");
                    };
                    if c == q {
                        break;
                    }
                    if c == b'\n' {
                        return self.err("newline in string");
                    }
                    if c != b'\\' {
                        out.push(c);
                        continue;
                    }
                    let Some(e) = self.bump() else {
                        return self.err("unterminated escape");
                    };
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'a' => out.push(7),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'v' => out.push(11),
                        b'\\' | b'\'' | b'"' | b'?' => out.push(e),
                        b'x' | b'X' => {
                            let mut v = 0u32;
                            let mut n = 0;
                            while n < 2 && self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                                v = v * 16
                                    + (self.bump().unwrap_or(b'0') as char)
                                        .to_digit(16)
                                        .unwrap_or(0);
                                n += 1;
                            }
                            if n == 0 {
                                return self.err("bad \\x escape");
                            }
                            out.push(v as u8);
                        }
                        b'0'..=b'7' => {
                            let mut v = (e - b'0') as u32;
                            let mut n = 1;
                            while n < 3 && self.peek().is_some_and(|c| (b'0'..=b'7').contains(&c)) {
                                v = v * 8 + (self.bump().unwrap_or(b'0') - b'0') as u32;
                                n += 1;
                            }
                            out.push(v as u8);
                        }
                        other => return self.err(format!("unknown escape '\\{}'", other as char)),
                    }
                }
                // Adjacent string literals concatenate.
                self.skip_ws();
                if !matches!(self.peek(), Some(b'"') | Some(b'\'')) {
                    break;
                }
            }
            return Ok(Some(Tok::Str(out)));
        }
        self.bump();
        if "{}<>[]:,;".contains(c as char) {
            return Ok(Some(Tok::Sym(c as char)));
        }
        self.err(format!("unexpected character '{}'", c as char))
    }
}

struct Parser<'a> {
    lx: Lexer<'a>,
    ahead: Option<Tok>,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> R<Option<&Tok>> {
        if self.ahead.is_none() {
            self.ahead = self.lx.next()?;
        }
        Ok(self.ahead.as_ref())
    }
    fn take(&mut self) -> R<Option<Tok>> {
        self.peek()?;
        Ok(self.ahead.take())
    }
    fn eat_sym(&mut self, c: char) -> R<bool> {
        if self.peek()? == Some(&Tok::Sym(c)) {
            self.ahead = None;
            return Ok(true);
        }
        Ok(false)
    }
    fn expect_sym(&mut self, c: char, what: &str) -> R<()> {
        if !self.eat_sym(c)? {
            let got = self.peek()?.cloned();
            return self.lx.err(format!("expected '{c}' {what}, found {got:?}"));
        }
        Ok(())
    }

    fn parse_fields(
        &mut self,
        msg: &mut dyn MessageDyn,
        desc: &MessageDescriptor,
        end: Option<char>,
    ) -> R<()> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut oneofs: HashSet<String> = HashSet::new();
        loop {
            match (self.peek()?.cloned(), end) {
                (None, None) => return Ok(()),
                (None, Some(e)) => return self.lx.err(format!("missing '{e}'")),
                (Some(Tok::Sym(c)), Some(e)) if c == e => {
                    self.ahead = None;
                    return Ok(());
                }
                _ => {}
            }
            let name = match self.take()? {
                Some(Tok::Ident(n)) => n,
                other => {
                    return self
                        .lx
                        .err(format!("expected a field name, found {other:?}"))
                }
            };
            let Some(field) = desc.field_by_name(&name) else {
                return self.lx.err(format!(
                    "message type \"{}\" has no field named \"{name}\"",
                    desc.full_name()
                ));
            };
            if !field.is_repeated_or_map() {
                if !seen.insert(name.clone()) {
                    return self.lx.err(format!(
                        "non-repeated field \"{name}\" is specified multiple times"
                    ));
                }
                if let Some(o) = field.containing_oneof() {
                    if !oneofs.insert(o.name().to_string()) {
                        return self.lx.err(format!(
                            "field \"{name}\" is specified along with another member of oneof \"{}\"",
                            o.name()
                        ));
                    }
                }
            }
            self.parse_field_value(msg, &field)?;
            // Optional separator.
            if !self.eat_sym(',')? {
                self.eat_sym(';')?;
            }
        }
    }

    fn parse_field_value(&mut self, msg: &mut dyn MessageDyn, field: &FieldDescriptor) -> R<()> {
        let rft = field.runtime_field_type();
        let is_msg = match &rft {
            RuntimeFieldType::Singular(t) | RuntimeFieldType::Repeated(t) => {
                matches!(t, RuntimeType::Message(_))
            }
            RuntimeFieldType::Map(..) => true,
        };
        let colon = self.eat_sym(':')?;
        if !is_msg && !colon {
            return self
                .lx
                .err(format!("expected ':' after field \"{}\"", field.name()));
        }
        let list = self.eat_sym('[')?;
        if list && matches!(rft, RuntimeFieldType::Singular(_)) {
            return self.lx.err(format!(
                "list syntax used for non-repeated field \"{}\"",
                field.name()
            ));
        }
        loop {
            if list && self.eat_sym(']')? {
                break;
            }
            match &rft {
                RuntimeFieldType::Singular(t) => {
                    let v = self.parse_value(t)?;
                    field.set_singular_field(msg, v);
                }
                RuntimeFieldType::Repeated(t) => {
                    let v = self.parse_value(t)?;
                    field.mut_repeated(msg).push(v);
                }
                RuntimeFieldType::Map(k, v) => {
                    let (k, v) = self.parse_map_entry(k, v)?;
                    field.mut_map(msg).insert(k, v);
                }
            }
            if !list {
                break;
            }
            if !self.eat_sym(',')? {
                self.expect_sym(']', "to close the list")?;
                break;
            }
        }
        Ok(())
    }

    fn open_brace(&mut self) -> R<char> {
        if self.eat_sym('{')? {
            Ok('}')
        } else if self.eat_sym('<')? {
            Ok('>')
        } else {
            let got = self.peek()?.cloned();
            self.lx.err(format!("expected '{{' or '<', found {got:?}"))
        }
    }

    fn parse_map_entry(
        &mut self,
        kt: &RuntimeType,
        vt: &RuntimeType,
    ) -> R<(ReflectValueBox, ReflectValueBox)> {
        let end = self.open_brace()?;
        let mut key = None;
        let mut value = None;
        while !self.eat_sym(end)? {
            let name = match self.take()? {
                Some(Tok::Ident(n)) => n,
                other => {
                    return self
                        .lx
                        .err(format!("expected key or value, found {other:?}"))
                }
            };
            let (slot, t) = match name.as_str() {
                "key" => (&mut key, kt),
                "value" => (&mut value, vt),
                _ => return self.lx.err(format!("map entry has no field \"{name}\"")),
            };
            if slot.is_some() {
                return self
                    .lx
                    .err(format!("map entry field \"{name}\" given twice"));
            }
            let colon = self.eat_sym(':')?;
            if !matches!(t, RuntimeType::Message(_)) && !colon {
                return self.lx.err(format!("expected ':' after \"{name}\""));
            }
            *slot = Some(self.parse_value(t)?);
            if !self.eat_sym(',')? {
                self.eat_sym(';')?;
            }
        }
        Ok((
            key.unwrap_or_else(|| default_box(kt)),
            value.unwrap_or_else(|| default_box(vt)),
        ))
    }

    fn number(&mut self) -> R<String> {
        match self.take()? {
            Some(Tok::Num(n)) => Ok(n),
            Some(Tok::Ident(n)) => Ok(n),
            other => self.lx.err(format!("expected a number, found {other:?}")),
        }
    }

    fn int(&mut self, lo: i128, hi: i128) -> R<i128> {
        let s = self.number()?;
        let (neg, body) = match s.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, s.as_str()),
        };
        let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            i128::from_str_radix(h, 16)
        } else if body.len() > 1 && body.starts_with('0') {
            i128::from_str_radix(&body[1..], 8)
        } else {
            body.parse::<i128>()
        };
        let Ok(v) = v else {
            return self.lx.err(format!("invalid integer '{s}'"));
        };
        let v = if neg { -v } else { v };
        if v < lo || v > hi {
            return self.lx.err(format!("integer {s} out of range"));
        }
        Ok(v)
    }

    fn float(&mut self) -> R<f64> {
        let s = self.number()?;
        let l = s.to_ascii_lowercase();
        let (neg, body) = match l.strip_prefix('-') {
            Some(b) => (true, b.to_string()),
            None => (false, l.clone()),
        };
        let v = match body.as_str() {
            "inf" | "infinity" => f64::INFINITY,
            "nan" => f64::NAN,
            b => match b.trim_end_matches('f').parse::<f64>() {
                Ok(v) => v,
                Err(_) => return self.lx.err(format!("invalid number '{s}'")),
            },
        };
        Ok(if neg { -v } else { v })
    }

    fn parse_value(&mut self, t: &RuntimeType) -> R<ReflectValueBox> {
        Ok(match t {
            RuntimeType::Message(md) => {
                let end = self.open_brace()?;
                let mut m = md.new_instance();
                self.parse_fields(&mut *m, md, Some(end))?;
                ReflectValueBox::Message(m)
            }
            RuntimeType::Enum(ed) => match self.take()? {
                Some(Tok::Ident(n)) => match ed.value_by_name(&n) {
                    Some(v) => ReflectValueBox::Enum(ed.clone(), v.value()),
                    None => {
                        return self.lx.err(format!(
                            "unknown enumeration value \"{n}\" for enum \"{}\"",
                            ed.full_name()
                        ))
                    }
                },
                Some(Tok::Num(n)) => match n.parse::<i32>() {
                    Ok(v) if ed.value_by_number(v).is_some() => {
                        ReflectValueBox::Enum(ed.clone(), v)
                    }
                    _ => return self.lx.err(format!("unknown enumeration number {n}")),
                },
                other => {
                    return self
                        .lx
                        .err(format!("expected an enum value, found {other:?}"))
                }
            },
            RuntimeType::I32 => {
                ReflectValueBox::I32(self.int(i32::MIN as i128, i32::MAX as i128)? as i32)
            }
            RuntimeType::I64 => {
                ReflectValueBox::I64(self.int(i64::MIN as i128, i64::MAX as i128)? as i64)
            }
            RuntimeType::U32 => ReflectValueBox::U32(self.int(0, u32::MAX as i128)? as u32),
            RuntimeType::U64 => ReflectValueBox::U64(self.int(0, u64::MAX as i128)? as u64),
            RuntimeType::F32 => ReflectValueBox::F32(self.float()? as f32),
            RuntimeType::F64 => ReflectValueBox::F64(self.float()?),
            RuntimeType::Bool => match self.take()? {
                Some(Tok::Ident(n)) if matches!(n.as_str(), "true" | "True" | "t") => {
                    ReflectValueBox::Bool(true)
                }
                Some(Tok::Ident(n)) if matches!(n.as_str(), "false" | "False" | "f") => {
                    ReflectValueBox::Bool(false)
                }
                Some(Tok::Num(n)) if n == "1" => ReflectValueBox::Bool(true),
                Some(Tok::Num(n)) if n == "0" => ReflectValueBox::Bool(false),
                other => return self.lx.err(format!("expected a bool, found {other:?}")),
            },
            RuntimeType::String => match self.take()? {
                Some(Tok::Str(b)) => match String::from_utf8(b) {
                    Ok(s) => ReflectValueBox::String(s),
                    Err(_) => return self.lx.err("string is not valid UTF-8"),
                },
                other => return self.lx.err(format!("expected a string, found {other:?}")),
            },
            RuntimeType::VecU8 => match self.take()? {
                Some(Tok::Str(b)) => ReflectValueBox::Bytes(b),
                other => return self.lx.err(format!("expected a string, found {other:?}")),
            },
        })
    }
}

fn default_box(t: &RuntimeType) -> ReflectValueBox {
    match t {
        RuntimeType::I32 => ReflectValueBox::I32(0),
        RuntimeType::I64 => ReflectValueBox::I64(0),
        RuntimeType::U32 => ReflectValueBox::U32(0),
        RuntimeType::U64 => ReflectValueBox::U64(0),
        RuntimeType::F32 => ReflectValueBox::F32(0.0),
        RuntimeType::F64 => ReflectValueBox::F64(0.0),
        RuntimeType::Bool => ReflectValueBox::Bool(false),
        RuntimeType::String => ReflectValueBox::String(String::new()),
        RuntimeType::VecU8 => ReflectValueBox::Bytes(Vec::new()),
        RuntimeType::Enum(d) => ReflectValueBox::Enum(d.clone(), d.default_value().value()),
        RuntimeType::Message(m) => ReflectValueBox::Message(m.new_instance()),
    }
}

/// Parse a text-format message.
pub fn parse<M: MessageFull>(text: &str) -> Result<M, PbtxtError> {
    let mut m = M::new();
    let desc = M::descriptor();
    let mut p = Parser {
        lx: Lexer {
            s: text.as_bytes(),
            pos: 0,
            line: 1,
            col: 1,
        },
        ahead: None,
    };
    p.parse_fields(&mut m, &desc, None)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::proto::ModelConfig;

    #[test]
    fn parses_triton_style_config() {
        let c: ModelConfig = parse(
            r#"
            name: "resnet_trt"  # a comment
            backend: "rusttrt"
            max_batch_size: 32
            input [ { name: "input"  data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
            output [ { name: "logits", data_type: TYPE_FP32, dims: [ -1 ] reshape: { shape: [ ] } } ]
            dynamic_batching { preferred_batch_size: [ 8, 16 ] max_queue_delay_microseconds: 500 }
            instance_group [ { kind: KIND_GPU count: 2 gpus: [ 0 ] } ]
            parameters { key: "precision" value: { string_value: "fp" '16' } }
            parameters < key: "x" value < string_value: "a\x41\101\n" > >
            model_warmup [ { name: "w" batch_size: 1 inputs { key: "input" value: { data_type: TYPE_FP32 dims: [3] zero_data: true } } } ]
            optimization { input_pinned_memory { enable: False } }
            "#,
        )
        .unwrap();
        assert_eq!(c.name, "resnet_trt");
        assert_eq!(c.max_batch_size, 32);
        assert_eq!(c.input[0].dims, vec![3, 224, 224]);
        assert_eq!(c.output[0].dims, vec![-1]);
        assert!(c.output[0].reshape.is_some());
        assert_eq!(c.dynamic_batching().preferred_batch_size, vec![8, 16]);
        assert_eq!(c.instance_group[0].count, 2);
        assert_eq!(c.parameters["precision"].string_value, "fp16");
        assert_eq!(c.parameters["x"].string_value, "aAA\n");
        assert!(c.model_warmup[0].inputs["input"].zero_data());
        assert!(!c.optimization.input_pinned_memory.enable);
    }

    #[test]
    fn rejects_what_triton_rejects() {
        for bad in [
            "nme: \"x\"",
            "name: \"a\" name: \"b\"",
            "max_batch_size 4",
            "max_batch_size: 4000000000",
            "input [ { data_type: TYPE_FLOAT } ]",
            "dynamic_batching {} sequence_batching {}",
            "input { name: \"a\" ",
            "name: [\"a\"]",
        ] {
            assert!(parse::<ModelConfig>(bad).is_err(), "{bad}");
        }
    }
}

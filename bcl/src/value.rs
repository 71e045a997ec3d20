//! Values of the language: scalars, lists and tuples (ordered records), and the deep merge
//! that implements inheritance (`base { field = ... }`).

use crate::diag::{Error, Result, Span};
use crate::{LIST_LEN_MAX, STRING_BYTES_MAX, TUPLE_FIELDS_MAX, VALUE_DEPTH_MAX};
use std::collections::HashMap;
use std::rc::Rc;

/// What a number's unit suffix says it measures. The amount is kept in the unit's base:
/// bytes, seconds, or thousandths for `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Plain,
    /// `m`: thousandths (millicores for cpu) or, where a duration is expected, minutes.
    Milli,
    Bytes,
    Seconds,
}

impl Unit {
    pub fn describe(self) -> &'static str {
        match self {
            Unit::Plain => "a plain number",
            Unit::Milli => "an `m` quantity",
            Unit::Bytes => "a byte size",
            Unit::Seconds => "a duration",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quantity {
    pub value: f64,
    pub unit: Unit,
}

impl Quantity {
    pub fn plain(value: f64) -> Quantity {
        Quantity {
            value,
            unit: Unit::Plain,
        }
    }

    /// Text form used in args, env values and `str()`.
    pub fn render(&self) -> String {
        let n = render_f64(self.value);
        match self.unit {
            Unit::Plain | Unit::Bytes => n,
            Unit::Milli => format!("{n}m"),
            Unit::Seconds => format!("{n}s"),
        }
    }
}

/// Whole numbers without a fraction; others in Rust's shortest round-trip form.
pub(crate) fn render_f64(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Bool(bool),
    Num(Quantity),
    Str(Rc<str>),
    List(Rc<List>),
    Tuple(Rc<Tuple>),
}

#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub value: Value,
    /// Where the value was written (possibly in an imported file).
    pub span: Span,
}

#[derive(Debug, Default)]
pub(crate) struct List {
    pub items: Vec<Item>,
    pub depth: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub key: Rc<str>,
    pub key_span: Span,
    pub value: Value,
    pub value_span: Span,
}

#[derive(Debug, Default)]
pub(crate) struct Tuple {
    pub fields: Vec<Field>,
    pub depth: u32,
    /// Position of each key in `fields`: lookups stay O(1) in large tuples.
    index: HashMap<Rc<str>, usize>,
}

impl Value {
    /// Nesting depth: 0 for scalars.
    pub fn depth(&self) -> u32 {
        match self {
            Value::List(l) => l.depth,
            Value::Tuple(t) => t.depth,
            _ => 0,
        }
    }

    /// "a string", "a tuple", ... for type errors.
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Bool(_) => "a boolean",
            Value::Num(q) => q.unit.describe(),
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
        }
    }

    /// Text of a scalar (string, number, boolean); None for lists and tuples.
    pub fn render_scalar(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Num(q) => Some(q.render()),
            Value::Str(s) => Some(s.to_string()),
            Value::List(_) | Value::Tuple(_) => None,
        }
    }

    pub fn string(s: String, span: Span) -> Result<Value> {
        if s.len() > STRING_BYTES_MAX {
            return Err(Error::new(
                span,
                format!(
                    "this string would be {} bytes long; the most is {STRING_BYTES_MAX}",
                    s.len()
                ),
            ));
        }
        Ok(Value::Str(Rc::from(s)))
    }
}

fn check_depth(depth: u32, span: Span) -> Result<()> {
    if depth > VALUE_DEPTH_MAX {
        return Err(Error::new(
            span,
            format!("values are nested more than {VALUE_DEPTH_MAX} levels deep"),
        )
        .hint("flatten the structure: a job needs only a few levels of tuples"));
    }
    Ok(())
}

impl List {
    pub fn new(items: Vec<Item>, span: Span) -> Result<List> {
        if items.len() > LIST_LEN_MAX {
            return Err(Error::new(
                span,
                format!(
                    "this list would have {} items; the most is {LIST_LEN_MAX}",
                    items.len()
                ),
            ));
        }
        let depth = 1 + items.iter().map(|i| i.value.depth()).max().unwrap_or(0);
        check_depth(depth, span)?;
        Ok(List { items, depth })
    }
}

impl Tuple {
    /// A tuple of `fields`, whose keys are distinct (the parser and `merge` ensure it; a
    /// later duplicate would shadow nothing and simply be unreachable by key).
    pub fn new(fields: Vec<Field>, span: Span) -> Result<Tuple> {
        if fields.len() > TUPLE_FIELDS_MAX {
            return Err(Error::new(
                span,
                format!(
                    "this tuple would have {} fields; the most is {TUPLE_FIELDS_MAX}",
                    fields.len()
                ),
            ));
        }
        let depth = 1 + fields.iter().map(|f| f.value.depth()).max().unwrap_or(0);
        check_depth(depth, span)?;
        let mut index = HashMap::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            index.entry(f.key.clone()).or_insert(i);
        }
        Ok(Tuple {
            fields,
            depth,
            index,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Field> {
        self.index.get(key).map(|&i| &self.fields[i])
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| &*f.key)
    }
}

/// Fields of a base tuple copied by `merge` per evaluation step charged.
const COPIED_FIELDS_PER_STEP: usize = 4;

/// Inheritance: `over`'s fields replace `base`'s, except that a tuple overriding a tuple is
/// merged field by field (so `base { env = { A = '1' } }` keeps base's other variables).
/// A replaced field keeps its position; new fields come last. `step` is charged per field
/// so that merging huge shared structures stays within the evaluation budget (callers
/// report running out at the override they evaluate, whatever span is passed).
pub(crate) fn merge(
    base: &Tuple,
    over: &Tuple,
    span: Span,
    step: &mut dyn FnMut(Span) -> Result<()>,
) -> Result<Tuple> {
    // Copying the base costs too: a chain of overrides of a wide tuple builds many copies.
    for f in base.fields.iter().step_by(COPIED_FIELDS_PER_STEP) {
        step(f.key_span)?;
    }
    let mut fields = base.fields.clone();
    for f in &over.fields {
        step(f.key_span)?;
        match base.index.get(&f.key).map(|&i| &mut fields[i]) {
            Some(existing) => {
                let value = match (&existing.value, &f.value) {
                    (Value::Tuple(b), Value::Tuple(o)) => {
                        Value::Tuple(Rc::new(merge(b, o, f.value_span, step)?))
                    }
                    _ => f.value.clone(),
                };
                existing.value = value;
                existing.value_span = f.value_span;
                existing.key_span = f.key_span;
            }
            None => fields.push(f.clone()),
        }
    }
    Tuple::new(fields, span)
}

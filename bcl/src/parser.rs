//! Recursive-descent parser: tokens to items and expressions.
//!
//! `job`, `alloc` and `import` are keywords only at the start of a top-level item, so they
//! remain usable as field names (a job's `alloc = 'db'`).

use crate::ast::{BinOp, Expr, ExprKind, FieldExpr, Item, ItemKind, UnOp};
use crate::diag::{Error, Result, Span};
use crate::lexer::{Tok, Token};
use crate::value::Unit;
use crate::EXPR_DEPTH_MAX;
use std::rc::Rc;

/// Words that cannot name a variable or field in expression position.
const RESERVED: [&str; 5] = ["if", "then", "else", "true", "false"];

pub(crate) fn parse(tokens: Vec<Token>) -> Result<Vec<Item>> {
    let mut p = Parser {
        tokens,
        pos: 0,
        nesting: 0,
    };
    p.file()
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Current recursion depth of the descent, bounded by EXPR_DEPTH_MAX.
    nesting: u32,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends the stream with Eof, and `bump` never passes it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek2(&self) -> &Tok {
        &self.tokens[(self.pos + 1).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok, context: &str) -> Result<Span> {
        if &self.peek().tok == tok {
            return Ok(self.bump().span);
        }
        let found = self.peek();
        let mut err = Error::new(
            found.span,
            format!(
                "expected {} {context}, found {}",
                tok.describe(),
                found.tok.describe()
            ),
        );
        if *tok == Tok::Assign && found.tok == Tok::LBrace {
            err = err.hint("write `name = { ... }`");
        }
        Err(err)
    }

    fn enter(&mut self, span: Span) -> Result<()> {
        self.nesting += 1;
        if self.nesting > EXPR_DEPTH_MAX {
            return Err(Error::new(
                span,
                format!("this expression is nested more than {EXPR_DEPTH_MAX} levels deep"),
            )
            .hint("split it into variables"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    fn file(&mut self) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        loop {
            while self.eat(&Tok::Semi) {}
            let t = self.peek().clone();
            match &t.tok {
                Tok::Eof => return Ok(items),
                Tok::Ident(word) => {
                    let keyword_form = matches!(self.peek2(), Tok::Ident(_) | Tok::Str(_));
                    let item = match word.as_str() {
                        "import" if keyword_form => self.import()?,
                        "job" if keyword_form => self.decl(ItemKind::Job, "job")?,
                        "alloc" if keyword_form => self.decl(ItemKind::Alloc, "alloc")?,
                        _ => self.let_item()?,
                    };
                    items.push(item);
                }
                other => {
                    return Err(Error::new(
                        t.span,
                        format!(
                            "expected a job, an alloc, an import or `name = value`, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
    }

    fn import(&mut self) -> Result<Item> {
        self.bump();
        let t = self.bump();
        let Tok::Str(path) = t.tok else {
            return Err(
                Error::new(t.span, "expected the imported file's path as a string")
                    .hint("write `import 'common.bcl'`"),
            );
        };
        let mut alias = None;
        if matches!(&self.peek().tok, Tok::Ident(w) if w == "as") {
            self.bump();
            let (name, span) = self.ident("after `as`")?;
            alias = Some((name, span));
        }
        Ok(Item {
            kind: ItemKind::Import { path, alias },
            name: Rc::from(""),
            name_span: t.span,
            value: None,
        })
    }

    fn decl(&mut self, kind: ItemKind, what: &str) -> Result<Item> {
        self.bump();
        let t = self.bump();
        let name: Rc<str> = match t.tok {
            Tok::Ident(s) | Tok::Str(s) => Rc::from(s),
            other => {
                return Err(Error::new(
                    t.span,
                    format!("expected the {what} name, found {}", other.describe()),
                ))
            }
        };
        self.expect(&Tok::Assign, &format!("after the {what} name"))?;
        let value = self.expr()?;
        Ok(Item {
            kind,
            name,
            name_span: t.span,
            value: Some(value),
        })
    }

    fn let_item(&mut self) -> Result<Item> {
        let (name, span) = self.ident("at the start of a definition")?;
        if !matches!(self.peek().tok, Tok::Assign) {
            let found = self.peek();
            let mut err = Error::new(
                found.span,
                format!(
                    "expected `=` after `{name}`, found {}",
                    found.tok.describe()
                ),
            );
            if matches!(&*name, "jobs" | "Job" | "JOB") {
                err = err.hint("declare a job with `job NAME = { ... }`");
            }
            return Err(err);
        }
        self.bump();
        let value = self.expr()?;
        Ok(Item {
            kind: ItemKind::Let,
            name,
            name_span: span,
            value: Some(value),
        })
    }

    fn ident(&mut self, context: &str) -> Result<(Rc<str>, Span)> {
        let t = self.bump();
        match t.tok {
            Tok::Ident(s) if !RESERVED.contains(&s.as_str()) => Ok((Rc::from(s), t.span)),
            other => Err(Error::new(
                t.span,
                format!("expected a name {context}, found {}", other.describe()),
            )),
        }
    }

    fn expr(&mut self) -> Result<Expr> {
        self.enter(self.peek().span)?;
        let r = self.if_expr();
        self.leave();
        r
    }

    fn if_expr(&mut self) -> Result<Expr> {
        if !matches!(&self.peek().tok, Tok::Ident(w) if w == "if") {
            return self.binary(0);
        }
        let start = self.bump().span;
        let cond = self.expr()?;
        self.keyword("then", "after the condition of `if`")?;
        let then = self.expr()?;
        self.keyword(
            "else",
            "after the `then` branch (every `if` needs an `else`)",
        )?;
        let other = self.expr()?;
        let span = start.to(other.span);
        Expr::new(
            ExprKind::If(Box::new(cond), Box::new(then), Box::new(other)),
            span,
        )
    }

    fn keyword(&mut self, word: &str, context: &str) -> Result<()> {
        let t = self.peek().clone();
        if matches!(&t.tok, Tok::Ident(w) if w == word) {
            self.bump();
            return Ok(());
        }
        Err(Error::new(
            t.span,
            format!("expected `{word}` {context}, found {}", t.tok.describe()),
        ))
    }

    /// Binary operators by precedence level (0 lowest), left-associative.
    fn binary(&mut self, level: usize) -> Result<Expr> {
        const LEVELS: [&[(Tok, BinOp)]; 5] = [
            &[(Tok::OrOr, BinOp::Or)],
            &[(Tok::AndAnd, BinOp::And)],
            &[
                (Tok::EqEq, BinOp::Eq),
                (Tok::NotEq, BinOp::Ne),
                (Tok::Lt, BinOp::Lt),
                (Tok::Le, BinOp::Le),
                (Tok::Gt, BinOp::Gt),
                (Tok::Ge, BinOp::Ge),
            ],
            &[(Tok::Plus, BinOp::Add), (Tok::Minus, BinOp::Sub)],
            &[
                (Tok::Star, BinOp::Mul),
                (Tok::Slash, BinOp::Div),
                (Tok::Percent, BinOp::Rem),
            ],
        ];
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let first = self.binary(level + 1)?;
        let mut rest = Vec::new();
        while let Some(op) = ops
            .iter()
            .find(|(t, _)| *t == self.peek().tok)
            .map(|(_, op)| *op)
        {
            self.bump();
            rest.push((op, self.binary(level + 1)?));
        }
        let Some((_, last)) = rest.last() else {
            return Ok(first);
        };
        let span = first.span.to(last.span);
        Expr::new(ExprKind::Chain(Box::new(first), rest), span)
    }

    fn unary(&mut self) -> Result<Expr> {
        let op = match self.peek().tok {
            Tok::Minus => UnOp::Neg,
            Tok::Bang => UnOp::Not,
            _ => return self.postfix(),
        };
        let start = self.bump().span;
        self.enter(start)?;
        let inner = self.unary();
        self.leave();
        let inner = inner?;
        let span = start.to(inner.span);
        Expr::new(ExprKind::Unary(op, Box::new(inner)), span)
    }

    fn postfix(&mut self) -> Result<Expr> {
        let mut e = self.primary()?;
        loop {
            match self.peek().tok {
                Tok::Dot => {
                    self.bump();
                    let t = self.bump();
                    let name = match t.tok {
                        Tok::Ident(s) => Rc::from(s),
                        other => {
                            return Err(Error::new(
                                t.span,
                                format!(
                                    "expected a field name after `.`, found {}",
                                    other.describe()
                                ),
                            ))
                        }
                    };
                    let span = e.span.to(t.span);
                    e = Expr::new(ExprKind::Field(Box::new(e), name, t.span), span)?;
                }
                Tok::LBracket => {
                    self.bump();
                    let index = self.expr()?;
                    let end = self.expect(&Tok::RBracket, "to close the index")?;
                    let span = e.span.to(end);
                    e = Expr::new(ExprKind::Index(Box::new(e), Box::new(index)), span)?;
                }
                Tok::LBrace => {
                    let over = self.tuple()?;
                    let span = e.span.to(over.span);
                    e = Expr::new(ExprKind::Override(Box::new(e), Box::new(over)), span)?;
                }
                Tok::LParen => {
                    let ExprKind::Var(name) = &e.kind else {
                        return Err(Error::new(
                            self.peek().span,
                            "only builtin functions can be called",
                        )
                        .hint("the builtins are str(x) and len(x)"));
                    };
                    let (name, name_span) = (name.clone(), e.span);
                    self.bump();
                    let mut args = Vec::new();
                    while self.peek().tok != Tok::RParen {
                        args.push(self.expr()?);
                        if !self.eat(&Tok::Comma) {
                            break;
                        }
                    }
                    let end = self.expect(&Tok::RParen, "to close the call's arguments")?;
                    e = Expr::new(ExprKind::Call(name, name_span, args), name_span.to(end))?;
                }
                _ => return Ok(e),
            }
        }
    }

    fn primary(&mut self) -> Result<Expr> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Num(q) => {
                self.bump();
                Expr::new(ExprKind::Num(q), t.span)
            }
            Tok::Str(s) => {
                self.bump();
                Expr::new(ExprKind::Str(Rc::from(s)), t.span)
            }
            Tok::Ident(word) => match word.as_str() {
                "true" | "false" => {
                    self.bump();
                    Expr::new(ExprKind::Bool(word == "true"), t.span)
                }
                "if" => self.expr(),
                "then" | "else" => Err(Error::new(
                    t.span,
                    format!("unexpected `{word}`: expected a value"),
                )),
                _ => {
                    self.bump();
                    Expr::new(ExprKind::Var(Rc::from(word)), t.span)
                }
            },
            Tok::LParen => {
                self.bump();
                let inner = self.expr()?;
                self.expect(&Tok::RParen, "to close `(`")?;
                Ok(inner)
            }
            Tok::LBracket => self.list(),
            Tok::LBrace => self.tuple(),
            other => {
                let mut err = Error::new(
                    t.span,
                    format!("expected a value, found {}", other.describe()),
                );
                if other == Tok::Eof {
                    err = err.hint("the file ends in the middle of a definition");
                } else if other == Tok::RBrace || other == Tok::Comma {
                    err = err.hint("every `name =` needs a value after it");
                }
                Err(err)
            }
        }
    }

    fn list(&mut self) -> Result<Expr> {
        let start = self.bump().span;
        let mut items = Vec::new();
        loop {
            if self.peek().tok == Tok::RBracket {
                break;
            }
            items.push(self.expr()?);
            if !self.eat(&Tok::Comma) {
                if self.peek().tok != Tok::RBracket {
                    let found = self.peek();
                    return Err(Error::new(
                        found.span,
                        format!(
                            "expected `,` or `]` in a list, found {}",
                            found.tok.describe()
                        ),
                    )
                    .hint("separate list items with commas"));
                }
                break;
            }
        }
        let end = self.bump().span;
        Expr::new(ExprKind::List(items), start.to(end))
    }

    /// `{ key = value ... }`; fields may be separated by `,`, `;` or just whitespace. Keys are
    /// names, strings (env variables with odd characters) or whole numbers (task indexes).
    fn tuple(&mut self) -> Result<Expr> {
        let start = self.bump().span;
        let mut fields: Vec<FieldExpr> = Vec::new();
        let mut keys = std::collections::HashSet::new();
        loop {
            while self.eat(&Tok::Comma) || self.eat(&Tok::Semi) {}
            let t = self.peek().clone();
            let key: Rc<str> = match &t.tok {
                Tok::RBrace => break,
                Tok::Ident(s) => Rc::from(s.as_str()),
                Tok::Str(s) => Rc::from(s.as_str()),
                Tok::Num(q)
                    if q.unit == Unit::Plain && q.value.fract() == 0.0 && q.value < 1e15 =>
                {
                    Rc::from(format!("{}", q.value as u64))
                }
                Tok::Eof => {
                    return Err(Error::new(start, "this `{` is never closed")
                        .hint("add `}` at the end of the tuple"))
                }
                other => {
                    return Err(Error::new(
                        t.span,
                        format!("expected a field name or `}}`, found {}", other.describe()),
                    ))
                }
            };
            self.bump();
            if !keys.insert(key.clone()) {
                return Err(Error::new(
                    t.span,
                    format!("field `{key}` is set twice in this tuple"),
                )
                .hint("remove one of them"));
            }
            if !matches!(self.peek().tok, Tok::Assign) {
                let found = self.peek();
                return Err(Error::new(
                    found.span,
                    format!(
                        "expected `=` after field `{key}`, found {}",
                        found.tok.describe()
                    ),
                )
                .hint("fields are written `name = value`"));
            }
            self.bump();
            let value = self.expr()?;
            fields.push(FieldExpr {
                key,
                key_span: t.span,
                value,
            });
        }
        let end = self.bump().span;
        Expr::new(ExprKind::Tuple(fields), start.to(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::lex;

    fn parse_str(s: &str) -> Result<Vec<Item>> {
        parse(lex(0, s)?)
    }

    #[test]
    fn borgs_published_example_parses() {
        let items = parse_str(
            "job hello_world = {
               runtime = { cell = 'ic' }
               binary = '/bin/hello'
               args = { port = '%port%' }
               requirements = { ram = 100M disk = 100M cpu = 0.1 }
               replicas = 5
             }",
        )
        .unwrap();
        assert_eq!(items.len(), 1);
        assert!(matches!(items[0].kind, ItemKind::Job));
        assert_eq!(&*items[0].name, "hello_world");
    }

    #[test]
    fn precedence_is_conventional() {
        let items = parse_str("x = 1 + 2 * 3 == 7 && !false").unwrap();
        let Some(Expr {
            kind: ExprKind::Chain(left, rest),
            ..
        }) = &items[0].value
        else {
            panic!("expected a chain at the top");
        };
        assert_eq!(rest[0].0, BinOp::And);
        let ExprKind::Chain(sum, eq) = &left.kind else {
            panic!("expected == under &&");
        };
        assert_eq!(eq[0].0, BinOp::Eq);
        let ExprKind::Chain(_, plus) = &sum.kind else {
            panic!("expected + under ==");
        };
        assert_eq!(plus[0].0, BinOp::Add);
        assert!(matches!(plus[0].1.kind, ExprKind::Chain(_, ref mul) if mul[0].0 == BinOp::Mul));
    }

    #[test]
    fn keywords_are_contextual() {
        let items = parse_str("job = 3\njob j = { alloc = 'a' }\nalloc a = {}").unwrap();
        assert!(matches!(items[0].kind, ItemKind::Let));
        assert!(matches!(items[1].kind, ItemKind::Job));
        assert!(matches!(items[2].kind, ItemKind::Alloc));
    }

    #[test]
    fn syntax_errors_say_what_was_expected() {
        let e = parse_str("job web { }").unwrap_err();
        assert_eq!(e.message, "expected `=` after the job name, found `{`");
        let e = parse_str("x = [1 2]").unwrap_err();
        assert_eq!(e.message, "expected `,` or `]` in a list, found a number");
        let e = parse_str("x = { a = 1 a = 2 }").unwrap_err();
        assert_eq!(e.message, "field `a` is set twice in this tuple");
        let e = parse_str("x = { a = 1").unwrap_err();
        assert_eq!(e.message, "this `{` is never closed");
        let e = parse_str("x = if true then 1").unwrap_err();
        assert!(e.message.starts_with("expected `else`"));
        let e = parse_str("x = ").unwrap_err();
        assert_eq!(e.message, "expected a value, found the end of the file");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("x = {}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse_str(&deep)
            .unwrap_err()
            .message
            .contains("nested more than"));
        let long = format!("x = 1{}", " + 1".repeat(100_000));
        assert!(parse_str(&long).is_ok(), "a long chain is one level deep");
        let nested_chain = format!("x = {}1{}", "1 + (".repeat(100), ")".repeat(100));
        let err = parse_str(&nested_chain).map(|_| ()).unwrap_err();
        assert!(err.message.contains("nested more than"), "{}", err.message);
        let neg = format!("x = {}1", "-".repeat(100_000));
        assert!(parse_str(&neg)
            .unwrap_err()
            .message
            .contains("nested more than"));
    }
}

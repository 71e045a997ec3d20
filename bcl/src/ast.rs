//! Syntax tree of a BCL file.

use crate::diag::{Error, Result, Span};
use crate::value::Quantity;
use crate::EXPR_DEPTH_MAX;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Neg,
    Not,
}

#[derive(Debug)]
pub(crate) struct FieldExpr {
    pub key: Rc<str>,
    pub key_span: Span,
    pub value: Expr,
}

#[derive(Debug)]
pub(crate) enum ExprKind {
    Num(Quantity),
    Str(Rc<str>),
    Bool(bool),
    Var(Rc<str>),
    List(Vec<Expr>),
    Tuple(Vec<FieldExpr>),
    /// `base.name`
    Field(Box<Expr>, Rc<str>, Span),
    /// `base[index]`
    Index(Box<Expr>, Box<Expr>),
    /// `base { ... }`: inheritance with override; the second expr is a Tuple literal.
    Override(Box<Expr>, Box<Expr>),
    /// `name(args)`: a builtin function.
    Call(Rc<str>, Span, Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    /// `a op b op c ...` at one precedence level, left-associative. A chain is one level of
    /// the tree however long it is, so long sums do not deepen the recursion.
    Chain(Box<Expr>, Vec<(BinOp, Expr)>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub span: Span,
    /// Height of this subtree; bounded by EXPR_DEPTH_MAX so that evaluating (and dropping)
    /// the tree cannot exhaust the stack.
    pub depth: u32,
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Result<Expr> {
        let child = |e: &Expr| e.depth;
        let below = match &kind {
            ExprKind::Num(_) | ExprKind::Str(_) | ExprKind::Bool(_) | ExprKind::Var(_) => 0,
            ExprKind::List(items) | ExprKind::Call(_, _, items) => {
                items.iter().map(child).max().unwrap_or(0)
            }
            ExprKind::Tuple(fields) => fields.iter().map(|f| f.value.depth).max().unwrap_or(0),
            ExprKind::Field(e, _, _) | ExprKind::Unary(_, e) => e.depth,
            ExprKind::Index(a, b) | ExprKind::Override(a, b) => a.depth.max(b.depth),
            ExprKind::Chain(first, rest) => rest
                .iter()
                .map(|(_, e)| e.depth)
                .fold(first.depth, u32::max),
            ExprKind::If(a, b, c) => a.depth.max(b.depth).max(c.depth),
        };
        let depth = below + 1;
        if depth > EXPR_DEPTH_MAX {
            return Err(Error::new(
                span,
                format!("this expression is nested more than {EXPR_DEPTH_MAX} levels deep"),
            )
            .hint("split it into variables"));
        }
        Ok(Expr { kind, span, depth })
    }
}

#[derive(Debug)]
pub(crate) enum ItemKind {
    /// `import 'path'` (names merged into this file) or `import 'path' as name`.
    Import {
        path: String,
        alias: Option<(Rc<str>, Span)>,
    },
    /// `name = expr`
    Let,
    /// `job name = expr`
    Job,
    /// `alloc name = expr`
    Alloc,
}

#[derive(Debug)]
pub(crate) struct Item {
    pub kind: ItemKind,
    /// Bound name (for imports: the path string's span is `name_span`).
    pub name: Rc<str>,
    pub name_span: Span,
    pub value: Option<Expr>,
}

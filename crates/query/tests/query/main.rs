//! Tests for the `ferrobase-query` expression parser.

mod errors;
mod limits;
mod parse;
mod props;
mod support;

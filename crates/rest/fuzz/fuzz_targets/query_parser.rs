//! Fuzzes the rest service's URL/query parser: the input is a query string,
//! decoded into pairs as the service does, and each pair goes through the
//! public parse entry point the handler would use for it. Parsers must return
//! `Ok` or a `ParseError`, never panic.
#![no_main]

use ferrobase_rest::parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    for (key, value) in ferrobase_common::wire::query_pairs(query) {
        match key.as_str() {
            "select" => {
                let _ = parser::parse_select(&value);
            }
            "columns" | "on_conflict" => {
                let _ = parser::parse_columns(&value);
            }
            _ => {
                let last = key.rsplit('.').next().unwrap_or("");
                match last {
                    "order" => {
                        let _ = parser::parse_order(&value);
                    }
                    "or" | "and" => {
                        let negated = key.split('.').rev().nth(1) == Some("not");
                        let _ = parser::parse_logic(last == "or", negated, &value);
                    }
                    "limit" | "offset" => {}
                    _ => {
                        if let Ok((_, field)) = parser::parse_key(&key) {
                            let _ = parser::parse_filter_value(field.clone(), &value);
                            let _ = field.output_name();
                        }
                    }
                }
            }
        }
        // Every value also goes through each parser, so inputs need not guess keys.
        let _ = parser::parse_select(&value);
        let _ = parser::parse_order(&value);
        let _ = parser::parse_logic(true, false, &value);
        let _ = parser::parse_columns(&value);
    }
});

//! The shape of a component's code, checked against [`LoadLimits`] in one
//! linear pass before it is compiled (see `LoadLimits` for why).

use wasmparser::{Operator, Parser, Payload};

use crate::limits::LoadLimits;

/// `Err` with the bound `bytes` break, in words; `Ok` when within every
/// bound (or when the bytes do not parse: the compiler then says why).
pub(crate) fn check(bytes: &[u8], limits: &LoadLimits) -> Result<(), String> {
    let mut functions: u64 = 0;
    let mut code_bytes: u64 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CodeSectionEntry(body)) = payload else {
            // Parse errors are the compiler's to report, with its words.
            continue;
        };
        functions += 1;
        if functions > u64::from(limits.max_functions) {
            return Err(format!(
                "more than {} functions (LoadLimits::max_functions)",
                limits.max_functions
            ));
        }
        let size = body.range().len() as u64;
        code_bytes += size;
        if size > limits.max_function_bytes {
            return Err(format!(
                "function {functions} has {size} bytes of code: the limit is {} \
                 (LoadLimits::max_function_bytes)",
                limits.max_function_bytes
            ));
        }
        if code_bytes > limits.max_code_bytes {
            return Err(format!(
                "more than {} bytes of code (LoadLimits::max_code_bytes)",
                limits.max_code_bytes
            ));
        }
        let Ok(locals) = body.get_locals_reader() else {
            continue;
        };
        let mut count: u64 = 0;
        for local in locals {
            let Ok((n, _)) = local else { break };
            count += u64::from(n);
        }
        if count > u64::from(limits.max_function_locals) {
            return Err(format!(
                "function {functions} has {count} locals: the limit is {} \
                 (LoadLimits::max_function_locals)",
                limits.max_function_locals
            ));
        }
        // Every operator that opens a block takes two bytes at least (its
        // opcode and block type): a shorter body cannot nest too deep.
        if size < 2 * (u64::from(limits.max_function_nesting) + 1) {
            continue;
        }
        let Ok(operators) = body.get_operators_reader() else {
            continue;
        };
        let mut depth: u32 = 0;
        for operator in operators {
            match operator {
                Ok(Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. })
                | Ok(Operator::TryTable { .. } | Operator::Try { .. }) => {
                    depth += 1;
                    if depth > limits.max_function_nesting {
                        return Err(format!(
                            "function {functions} nests blocks more than {} deep \
                             (LoadLimits::max_function_nesting)",
                            limits.max_function_nesting
                        ));
                    }
                }
                Ok(Operator::End) => depth = depth.saturating_sub(1),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    Ok(())
}

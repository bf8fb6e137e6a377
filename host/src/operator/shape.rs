//! The shape of a component's code, checked against [`LoadLimits`] in one
//! linear pass before it is compiled (see `LoadLimits` for why).

use wasmparser::{Operator, Parser, Payload};

use crate::limits::LoadLimits;

/// `Err` with the bound `bytes` break, in words; `Ok` when within every
/// bound (or when the bytes do not parse: the compiler then says why).
pub(crate) fn check(bytes: &[u8], limits: &LoadLimits) -> Result<(), String> {
    let mut functions: u64 = 0;
    let mut code_bytes: u64 = 0;
    // The core module being read: each type's parameter count (0 for a
    // type that is not a function's), each defined function's type, and
    // how many of its functions' bodies have been read.
    let mut type_params: Vec<u64> = Vec::new();
    let mut function_types: Vec<u32> = Vec::new();
    let mut bodies_read = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        // Parse errors are the compiler's to report, with its words.
        let body = match payload {
            Ok(Payload::Version {
                encoding: wasmparser::Encoding::Module,
                ..
            }) => {
                type_params.clear();
                function_types.clear();
                bodies_read = 0;
                continue;
            }
            Ok(Payload::TypeSection(types)) => {
                for group in types.into_iter().flatten() {
                    for ty in group.types() {
                        type_params.push(match &ty.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(func) => {
                                func.params().len() as u64
                            }
                            _ => 0,
                        });
                    }
                }
                continue;
            }
            Ok(Payload::FunctionSection(section)) => {
                function_types.extend(section.into_iter().flatten());
                continue;
            }
            Ok(Payload::CodeSectionEntry(body)) => body,
            _ => continue,
        };
        // A function's parameters are locals too (to the loop bound).
        let params = function_types
            .get(bodies_read)
            .and_then(|&ty| type_params.get(ty as usize))
            .copied()
            .unwrap_or(0);
        bodies_read += 1;
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
        // Loops nested deep cost Cranelift superlinear time, and more the
        // more locals (parameters included) each loop header carries (see
        // `LoadLimits`).
        let all_locals = count + params;
        let loop_bound = limits
            .max_loop_nesting
            .min(u32::try_from(limits.max_loop_locals / all_locals.max(1)).unwrap_or(u32::MAX));
        // Every operator that opens a block takes two bytes at least (its
        // opcode and block type): a shorter body cannot nest too deep.
        let bound = limits.max_function_nesting.min(loop_bound);
        if size < 2 * (u64::from(bound) + 1) {
            continue;
        }
        let Ok(operators) = body.get_operators_reader() else {
            continue;
        };
        // Whether each open block is a loop; at most `max_function_nesting`
        // long.
        let mut open: Vec<bool> = Vec::new();
        let mut loops: u32 = 0;
        for operator in operators {
            let is_loop = match operator {
                Ok(Operator::Loop { .. }) => true,
                Ok(
                    Operator::Block { .. }
                    | Operator::If { .. }
                    | Operator::TryTable { .. }
                    | Operator::Try { .. },
                ) => false,
                Ok(Operator::End) => {
                    if open.pop() == Some(true) {
                        loops -= 1;
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(_) => break,
            };
            if open.len() >= limits.max_function_nesting as usize {
                return Err(format!(
                    "function {functions} nests blocks more than {} deep \
                     (LoadLimits::max_function_nesting)",
                    limits.max_function_nesting
                ));
            }
            open.push(is_loop);
            if is_loop {
                loops += 1;
                if loops > limits.max_loop_nesting {
                    return Err(format!(
                        "function {functions} nests loops more than {} deep \
                         (LoadLimits::max_loop_nesting)",
                        limits.max_loop_nesting
                    ));
                }
                if u64::from(loops) * all_locals > limits.max_loop_locals {
                    return Err(format!(
                        "function {functions} nests {loops} loops over {all_locals} locals \
                         (parameters included): loops times locals is at most {} \
                         (LoadLimits::max_loop_locals)",
                        limits.max_loop_locals
                    ));
                }
            }
        }
    }
    Ok(())
}

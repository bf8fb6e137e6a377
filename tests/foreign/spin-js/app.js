// spin-js: never returns (a test of the call's deadline on StarlingMonkey).

export function metadata() {
  return { name: "spin-js", version: "0.1.0", description: "Never returns.", deterministic: false };
}

export function invoke(text) {
  let n = 0;
  for (;;) {
    n += 1;
  }
}

// The {{name}} operator, an xcs operator in JavaScript (written by `xcs new`).
//
// `invoke` is the world's export (wit/world.wit): change its signature there
// and here together. Returning a value is `ok`; throwing
// `{ code, message, retryable }` is an operator error with those fields.

export function metadata() {
  return {
    name: "{{name}}",
    version: "0.1.0",
    description: "Upper-cases a text.",
    // The result depends only on the input: the host may cache it.
    deterministic: true,
  };
}

export function invoke(text) {
  if (text === "") {
    throw { code: "empty", message: "the text is empty", retryable: false };
  }
  return text.toUpperCase();
}

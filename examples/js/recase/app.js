// recase: an xcs operator in JavaScript (componentize-js).
//
// Build: npm install && npm run build.

export function metadata() {
  return {
    name: "recase",
    version: "0.1.0",
    description: "Rewrites a text's words in a style: upper, lower, title or kebab.",
    deterministic: true,
  };
}

// A WIT enum arrives as its case name: "upper", "lower", "title", "kebab".
export function invoke(text, style) {
  const words = text.split(/\s+/).filter((word) => word !== "");
  if (words.length === 0) {
    // An operator error: the host reports code, message and retryable
    // flag as they are (exit code 5 from `xcs call`).
    throw { code: "empty", message: "the text has no words", retryable: false };
  }
  switch (style) {
    case "upper":
      return words.join(" ").toUpperCase();
    case "lower":
      return words.join(" ").toLowerCase();
    case "title":
      return words
        .map((word) => word.charAt(0).toUpperCase() + word.slice(1).toLowerCase())
        .join(" ");
    case "kebab":
      return words.join("-").toLowerCase();
  }
  throw { code: "internal", message: `no style ${style}`, retryable: false };
}

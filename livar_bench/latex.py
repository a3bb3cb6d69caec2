"""LaTeX escaping shared by the result tables (reporting) and the ablation table (analysis)."""

from __future__ import annotations

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters; α becomes $\\alpha$."""
    escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return escaped.replace("±", r"$\pm$").replace("α", r"$\alpha$").replace("–", "--")

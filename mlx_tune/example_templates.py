"""Question templates for :mod:`mlx_tune.examples` (data only).

Each grep template is ``(question, scope)``: scope ``repo`` omits the path argument, ``dir`` passes
the top-level folder the question names, ``file`` the file it names. Wording differs per template,
but the intent stays: locating -> grep, showing a file -> read, explaining -> direct. Changing a
template changes the generated examples (their bytes), so bump ``examples.GENERATOR`` with it.
"""

from __future__ import annotations

GREP_TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "class": [
        ("Where is the {name} class defined?", "repo"),
        ("Which file defines class {name} in {repo}?", "repo"),
        ("Find the definition of the {name} class.", "repo"),
        ("Locate `class {name}` in the {repo} codebase.", "repo"),
        ("Search the {dir} folder for where the {name} class is declared.", "dir"),
        ("In which module does {repo} declare {name}? Search for the class statement.", "repo"),
        ("Can you track down where class {name} lives?", "repo"),
        ("I'm looking for the {name} class; grep for its definition in {dir}/.", "dir"),
    ],
    "function": [
        ("Where is the function {name} defined?", "repo"),
        ("Find where {name}() is implemented in {repo}.", "repo"),
        ("Which file contains the definition of {name}?", "repo"),
        ("Locate the `{name}` function.", "repo"),
        ("Search {dir}/ for the def of {name}.", "dir"),
        ("Where does {repo} implement the {name} function?", "repo"),
        ("Help me find the source line that defines {name}.", "repo"),
    ],
    "method": [
        ("Where is the {name} method of {cls} defined?", "repo"),
        ("Find {cls}.{name} in the code.", "repo"),
        ("Locate the implementation of {cls}.{name}().", "repo"),
        ("Which file has the {name} method on {cls}?", "repo"),
        ("Search {dir}/ for where {cls} defines {name}.", "dir"),
        ("I need the definition of {name} in class {cls}; where is it?", "repo"),
    ],
    "decorator": [
        ("Find every function decorated with @{name}.", "repo"),
        ("Which functions use the @{name} decorator?", "repo"),
        ("List all places in {repo} where @{name} is applied.", "repo"),
        ("Where is @{name} used as a decorator inside {dir}/?", "dir"),
        ("Search for uses of the {name} decorator.", "repo"),
        ("Find the definitions in {path} that are decorated with @{name}.", "file"),
        ("Which callables in {path} carry the @{name} decorator?", "file"),
    ],
    "import": [
        ("Which files import {name}?", "repo"),
        ("Find every import of {name} in {repo}.", "repo"),
        ("Where is the {name} module imported?", "repo"),
        ("Search {dir}/ for modules that import from {name}.", "dir"),
        ("Locate the import statements that pull in {name}.", "repo"),
        ("Find the line in {path} that imports {name}.", "file"),
    ],
    "usage": [
        ("Which files use {name}?", "repo"),
        ("Find all usages of {name}.", "repo"),
        ("Where is {name} referenced across {repo}?", "repo"),
        ("Search for every place that uses {name} in {dir}/.", "dir"),
        ("Point me to every place {name} gets used in the whole repo.", "repo"),
        ("Find the places in {path} that mention {name}.", "file"),
    ],
}

READ_TEMPLATES: dict[str, list[str]] = {
    "file": [
        "Show me {path}.",
        "Open {path}.",
        "What is in {path}?",
        "Display the contents of {path}.",
        "Let me see the file {path}.",
        "Print out {path} for me.",
        "Can you show the source of {path}?",
        "Read {path} so I can look at it.",
        "I want to look through {path}; open it.",
        "Pull up {path}.",
        "What does the file {path} contain? Show me all of it.",
    ],
    "module": [
        "Show me the {module} module.",
        "Open the source of the {module} module.",
        "What is in the {module} module? Show me the file.",
    ],
    "symbol": [
        "Show me {path}, where {name} is defined.",
        "Open {path}; I want to read the code around {name}.",
        "Display {path} so I can see how {name} is written.",
    ],
}

DIRECT_QUESTIONS: dict[str, list[str]] = {
    "class": [
        "What does the {name} class in {repo} do?",
        "Explain what {qual} is for.",
        "What is the {name} class in {repo} used for?",
        "Can you describe the purpose of the {name} class?",
        "Briefly, what is {name} responsible for in {repo}?",
        "How would you summarize the {name} class?",
    ],
    "function": [
        "What does the {name} function do?",
        "Explain the purpose of {name}() in {repo}.",
        "What is {name} used for?",
        "Can you describe what the {name} function in {repo} is meant to do?",
        "Tell me briefly what {name}() does.",
    ],
    "method": [
        "What does {qual} do?",
        "Explain the {name} method of {cls}.",
        "What is the role of {cls}.{name}() in {repo}?",
        "Can you describe what {qual} is for?",
        "In short, what does the {name} method on {cls} do?",
    ],
}

DOC_LEADS = [
    "Its docstring says: {doc}",
    "According to its docstring: {doc}",
    "The docstring describes it this way: {doc}",
    "Its documentation in the source reads: {doc}",
]

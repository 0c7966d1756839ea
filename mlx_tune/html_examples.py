"""HTML training examples: semantic HTML, forms, tables, navigation and accessibility.

``generate_html_examples`` writes a handful of small, valid pages into ``data/html/`` and examples
that are grounded in them exactly like the repository ones: every grep pattern matches a line of
``meta.path`` and every read path exists under ``meta.root``. Direct answers are hand-written
statements about HTML (they are training targets, so each was checked against the HTML spec and
WAI-ARIA practice).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

from mlx_tune import UserError, fileio, records

GENERATOR = "html-examples/1"

# ---------------------------------------------------------------- the pages

_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
</head>
<body>
"""

_NAV = """  <a class="skip-link" href="#main">Skip to main content</a>
  <header class="site-header">
    <a href="{up}index.html" class="logo"><img src="{up}img/logo.svg" alt="Harbor Tools home"></a>
    <nav aria-label="Main">
      <ul>
        <li><a href="{up}index.html"{cur_home}>Home</a></li>
        <li><a href="{up}pricing.html"{cur_pricing}>Pricing</a></li>
        <li><a href="{up}blog/accessible-images.html"{cur_blog}>Blog</a></li>
        <li><a href="{up}contact.html"{cur_contact}>Contact</a></li>
      </ul>
    </nav>
  </header>
"""

_FOOT = """  <footer class="site-footer">
    <p><small>&copy; 2024 Harbor Tools. All rights reserved.</small></p>
  </footer>
</body>
</html>
"""


def _page(title: str, body: str, current: str = "", up: str = "") -> str:
    cur = {k: ' aria-current="page"' if k == current else "" for k in ("home", "pricing", "blog", "contact")}
    nav = _NAV.format(up=up, **{f"cur_{k}": v for k, v in cur.items()})
    return _HEAD.format(title=title) + nav + body + _FOOT


PAGES: dict[str, str] = {
    "index.html": _page(
        "Harbor Tools: project tracking for small teams",
        """  <main id="main">
    <h1>Project tracking for small teams</h1>
    <p>Plan work, track issues and ship on time, without the enterprise overhead.</p>
    <section aria-labelledby="features-heading">
      <h2 id="features-heading">Features</h2>
      <ul>
        <li>Boards and lists that update live for the whole team</li>
        <li>Keyboard shortcuts for every action</li>
        <li>Exports to CSV and JSON</li>
      </ul>
    </section>
    <section aria-labelledby="start-heading">
      <h2 id="start-heading">Get started</h2>
      <p><a href="pricing.html">Compare plans</a> or <a href="contact.html">talk to us</a>.</p>
      <button type="button" class="menu-toggle" aria-expanded="false" aria-controls="more-links">
        More links
      </button>
      <ul id="more-links" hidden>
        <li><a href="blog/accessible-images.html">Read the blog</a></li>
        <li><a href="account/settings.html">Account settings</a></li>
      </ul>
    </section>
  </main>
""",
        current="home",
    ),
    "contact.html": _page(
        "Contact us | Harbor Tools",
        """  <main id="main">
    <h1>Contact us</h1>
    <form action="/contact" method="post">
      <p id="required-note">Fields marked with * are required.</p>
      <p>
        <label for="name">Name *</label>
        <input type="text" id="name" name="name" autocomplete="name" required>
      </p>
      <p>
        <label for="email">Email *</label>
        <input type="email" id="email" name="email" autocomplete="email" required
               aria-describedby="email-hint">
        <span id="email-hint">We only use your address to reply to this message.</span>
      </p>
      <fieldset>
        <legend>Preferred contact method</legend>
        <input type="radio" id="contact-email" name="contact_method" value="email" checked>
        <label for="contact-email">Email</label>
        <input type="radio" id="contact-phone" name="contact_method" value="phone">
        <label for="contact-phone">Phone</label>
      </fieldset>
      <p>
        <label for="topic">Topic</label>
        <select id="topic" name="topic">
          <option value="">Choose a topic</option>
          <option value="billing">Billing</option>
          <option value="support">Technical support</option>
          <option value="sales">Sales</option>
        </select>
      </p>
      <p>
        <label for="message">Message *</label>
        <textarea id="message" name="message" rows="6" required></textarea>
      </p>
      <p>
        <label><input type="checkbox" name="newsletter" value="yes"> Send me the monthly newsletter</label>
      </p>
      <button type="submit">Send message</button>
    </form>
    <div id="form-status" role="status"></div>
  </main>
""",
        current="contact",
    ),
    "pricing.html": _page(
        "Pricing | Harbor Tools",
        """  <main id="main">
    <h1>Pricing</h1>
    <table class="plans">
      <caption>Monthly price per plan, in US dollars</caption>
      <thead>
        <tr>
          <th scope="col">Plan</th>
          <th scope="col">Price</th>
          <th scope="col">Users</th>
          <th scope="col">Storage</th>
        </tr>
      </thead>
      <tbody>
        <tr>
          <th scope="row">Starter</th>
          <td>$0</td>
          <td>3</td>
          <td>1 GB</td>
        </tr>
        <tr>
          <th scope="row">Team</th>
          <td>$29</td>
          <td>25</td>
          <td>50 GB</td>
        </tr>
        <tr>
          <th scope="row">Business</th>
          <td>$99</td>
          <td>Unlimited</td>
          <td>1 TB</td>
        </tr>
      </tbody>
      <tfoot>
        <tr>
          <td colspan="4">Prices exclude sales tax. Annual billing saves 15%.</td>
        </tr>
      </tfoot>
    </table>
    <h2>Questions</h2>
    <details>
      <summary>Can I change plans later?</summary>
      <p>Yes. Upgrades apply at once; downgrades apply at the end of the billing period.</p>
    </details>
    <details>
      <summary>Is there a discount for nonprofits?</summary>
      <p>Registered nonprofits get the Team plan at half price.</p>
    </details>
  </main>
""",
        current="pricing",
    ),
    "blog/accessible-images.html": _page(
        "Writing alt text that helps | Harbor Tools blog",
        """  <nav aria-label="Breadcrumb">
    <ol>
      <li><a href="../index.html">Home</a></li>
      <li><a href="../blog/accessible-images.html" aria-current="page">Writing alt text that helps</a></li>
    </ol>
  </nav>
  <main id="main">
    <article>
      <header>
        <h1>Writing alt text that helps</h1>
        <p>By Dana Reyes, <time datetime="2024-03-18">March 18, 2024</time></p>
      </header>
      <p>Alt text should say what an image means in its context, not what it looks like pixel by pixel.</p>
      <figure>
        <img src="../img/contrast-chart.svg"
             alt="Bar chart: pages with alt text on every image rose from 41% to 78%.">
        <figcaption>Share of audited pages with alt text on every image, 2022 and 2024.</figcaption>
      </figure>
      <img src="../img/divider.svg" alt="">
      <h2>Decorative images</h2>
      <p>A purely decorative image gets an empty <code>alt=""</code> so screen readers skip it.</p>
      <blockquote cite="https://www.w3.org/WAI/tutorials/images/">
        <p>The alt text should be the most concise description possible of the image's purpose.</p>
      </blockquote>
      <aside aria-labelledby="related-heading">
        <h2 id="related-heading">Related</h2>
        <p><a href="../contact.html">Ask us about an accessibility review</a></p>
      </aside>
    </article>
  </main>
""",
        current="blog",
        up="../",
    ),
    "account/settings.html": _page(
        "Account settings | Harbor Tools",
        """  <main id="main">
    <h1>Account settings</h1>
    <form action="/account/password" method="post">
      <h2>Change password</h2>
      <p>
        <label for="current-password">Current password</label>
        <input type="password" id="current-password" name="current_password"
               autocomplete="current-password" required>
      </p>
      <p>
        <label for="new-password">New password</label>
        <input type="password" id="new-password" name="new_password" autocomplete="new-password"
               minlength="12" required aria-describedby="password-rules">
        <span id="password-rules">At least 12 characters.</span>
      </p>
      <button type="submit">Update password</button>
    </form>
    <h2>Danger zone</h2>
    <button type="button" id="delete-open">Delete account</button>
    <dialog id="delete-dialog" aria-labelledby="delete-title">
      <h2 id="delete-title">Delete your account?</h2>
      <p>This removes all your projects and cannot be undone.</p>
      <form method="dialog">
        <button value="cancel">Cancel</button>
        <button value="confirm">Delete account</button>
      </form>
    </dialog>
  </main>
""",
        up="../",
    ),
}

_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">{body}</svg>\n'
ASSETS: dict[str, str] = {
    "img/logo.svg": _SVG.format(w=32, h=32, body='<rect width="32" height="32" rx="6" fill="#1d4ed8"/>'),
    "img/divider.svg": _SVG.format(w=200, h=4, body='<rect width="200" height="4" fill="#cbd5e1"/>'),
    "img/contrast-chart.svg": _SVG.format(
        w=200,
        h=100,
        body='<rect x="30" y="59" width="50" height="41" fill="#94a3b8"/>'
        '<rect x="120" y="22" width="50" height="78" fill="#1d4ed8"/>',
    ),
}

# ---------------------------------------------------------------- the example pools

# (pattern, path searched, file the pattern matches, symbol, questions)
GREP_POOL: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    (
        r'<label for="email"',
        "contact.html",
        "contact.html",
        "label[for=email]",
        (
            "Where is the label for the email field in the contact form?",
            "Which line of the contact page labels the email input?",
        ),
    ),
    (
        r"<legend>",
        "contact.html",
        "contact.html",
        "legend",
        (
            "Find the legend that names the group of contact-method radio buttons.",
            "Does the contact form give its radio group a legend? Show me where.",
        ),
    ),
    (
        r'aria-describedby="email-hint"',
        "contact.html",
        "contact.html",
        "aria-describedby",
        (
            "Where is the email hint connected to the email input?",
            "Which input uses the email-hint text as its description?",
        ),
    ),
    (
        r'<button type="submit">Send message',
        "contact.html",
        "contact.html",
        "button[type=submit]",
        ("Find the submit button of the contact form.", "Where is the Send message button declared?"),
    ),
    (
        r'role="status"',
        "contact.html",
        "contact.html",
        "role=status",
        (
            "Where does the contact page announce the form status to screen readers?",
            "Is there a live region for form messages on the contact page?",
        ),
    ),
    (
        r"<caption>",
        "pricing.html",
        "pricing.html",
        "caption",
        ("Does the pricing table have a caption? Find it.", "Where is the pricing table's caption?"),
    ),
    (
        r'<th scope="row">',
        "pricing.html",
        "pricing.html",
        "th[scope=row]",
        (
            "Where are the row headers of the pricing table?",
            "Which cells of the plans table are marked as row headers?",
        ),
    ),
    (
        r"<summary>",
        "pricing.html",
        "pricing.html",
        "summary",
        (
            "Find the questions in the pricing FAQ that expand and collapse.",
            "Where are the disclosure summaries on the pricing page?",
        ),
    ),
    (
        r'aria-current="page"',
        ".",
        "index.html",
        "aria-current",
        (
            "Which links mark the current page with aria-current?",
            "Search the site for aria-current so I can see how the active link is marked.",
        ),
    ),
    (
        r'<nav aria-label="',
        ".",
        "index.html",
        "nav",
        ("Which navigation landmarks have an aria-label?", "Find every labelled <nav> in the site."),
    ),
    (
        r'class="skip-link"',
        "index.html",
        "index.html",
        "skip-link",
        (
            "Where is the skip link on the home page?",
            "Does the home page have a skip-to-content link? Find it.",
        ),
    ),
    (
        r"aria-expanded=",
        "index.html",
        "index.html",
        "aria-expanded",
        (
            "Find the toggle button that reports whether the extra links are shown.",
            "Where does the home page use aria-expanded?",
        ),
    ),
    (
        r"<figcaption>",
        "blog",
        "blog/accessible-images.html",
        "figcaption",
        (
            "Where are the figure captions in the blog?",
            "Find the figcaption of the chart in the alt text post.",
        ),
    ),
    (
        r'alt=""',
        "blog/accessible-images.html",
        "blog/accessible-images.html",
        "img[alt='']",
        (
            "Which images in the alt text post are marked as decorative?",
            "Find the image with an empty alt attribute in the blog post.",
        ),
    ),
    (
        r"<time datetime=",
        "blog",
        "blog/accessible-images.html",
        "time",
        (
            "Find the machine-readable publication date of the blog post.",
            "Where does the blog mark up its dates with <time>?",
        ),
    ),
    (
        r"<dialog\b",
        "account/settings.html",
        "account/settings.html",
        "dialog",
        (
            "Where is the delete-account confirmation dialog defined?",
            "Find the <dialog> element in the account settings page.",
        ),
    ),
    (
        r'autocomplete="new-password"',
        "account",
        "account/settings.html",
        "autocomplete",
        (
            "Find the new-password field in the account settings.",
            "Which password input tells password managers to suggest a new password?",
        ),
    ),
]

# (path, questions)
READ_POOL: list[tuple[str, tuple[str, ...]]] = [
    ("index.html", ("Show me the home page markup.", "Open index.html so I can check its landmarks.")),
    (
        "contact.html",
        (
            "Show me the contact form.",
            "Open contact.html; I want to review the form fields and their labels.",
        ),
    ),
    (
        "pricing.html",
        ("Show me the pricing page.", "Open pricing.html so I can check how the plans table is marked up."),
    ),
    (
        "blog/accessible-images.html",
        ("Open the blog post about alt text.", "Show me blog/accessible-images.html."),
    ),
    (
        "account/settings.html",
        (
            "Show me the account settings page.",
            "Open account/settings.html; I want to see how the delete dialog is built.",
        ),
    ),
]

# (topic, questions, answer)
DIRECT_POOL: list[tuple[str, tuple[str, ...], str]] = [
    (
        "label-for",
        ("What does the for attribute on a <label> do?", "How does a <label> get tied to its input?"),
        "The for attribute associates the label with the form control whose id has the same value. "
        "Screen readers then announce the label text as the control's name, and clicking the label "
        "focuses the control (or toggles it, for a checkbox or radio button), which also gives it a "
        "bigger click target. Wrapping the control inside the <label> creates the same association "
        "without for and id.",
    ),
    (
        "th-scope",
        ("When should I use the scope attribute on <th>?", 'What is scope="row" for in a table?'),
        'Use scope="col" on a header cell that labels a column and scope="row" on one that labels '
        "a row, so assistive technology reads the right headers with each data cell. Browsers can "
        "often guess in a table with a single header row, but scope makes it explicit and matters when "
        "a table has both row and column headers. For irregular tables with multi-level headers, give "
        "the <th> cells ids and list them in the headers attribute of each <td> instead.",
    ),
    (
        "nav",
        ("When should I use the <nav> element?", "Does every group of links need a <nav>?"),
        "Use <nav> for major blocks of navigation, such as the main site menu, a table of contents or "
        "a breadcrumb trail. It creates a navigation landmark that screen reader users can jump to. "
        "Not every group of links needs one: a few links in a footer or in body text can stay plain. "
        'When a page has more than one <nav>, give each a distinct aria-label, such as "Main" and '
        '"Breadcrumb", so the landmarks can be told apart.',
    ),
    (
        "alt-text",
        ("How do I write good alt text for an image?", "What should the alt attribute of an image say?"),
        "Describe the information or function the image has in its context, briefly, without starting "
        'with "image of". For a linked image or an icon button, describe the destination or the '
        'action. A purely decorative image gets an empty alt="" so screen readers skip it; leaving '
        "alt out entirely makes many screen readers read the file name instead. A complex image such "
        "as a chart needs a short alt plus a longer description nearby, for example in a <figcaption> "
        "or the surrounding text.",
    ),
    (
        "fieldset-legend",
        ("What are <fieldset> and <legend> for?", "How do I group radio buttons accessibly?"),
        "<fieldset> groups related form controls, and a <legend> as its first child gives the group a "
        "caption. Screen readers announce the legend together with the controls inside, which is what "
        'a set of radio buttons or checkboxes answering one question needs ("Preferred contact '
        'method": Email, Phone). Setting disabled on the fieldset disables every control inside it, '
        "except those inside its legend.",
    ),
    (
        "button-vs-link",
        ("Should I use a <button> or an <a> link?", "When is a link better than a button?"),
        "Use <a href> when activating it goes somewhere: another page or a location identified by a "
        "URL. Use <button> when it does something on the current page, such as submitting a form, "
        "opening a dialog or toggling a menu. Links are activated with Enter and buttons with Enter or "
        "Space, and assistive technology announces them differently, so a link styled as a button, or "
        "a <div> with a click handler, misleads users. Inside a form a <button> defaults to "
        'type="submit"; write type="button" for buttons that must not submit.',
    ),
    (
        "aria-current",
        ('What is aria-current="page" for?', "How do I mark the active link in a navigation menu?"),
        'aria-current="page" marks the link that points to the page the user is on, typically in a '
        "navigation menu or breadcrumb trail. Screen readers announce it as the current page, and CSS "
        'can style it with the [aria-current="page"] selector instead of a separate class. Put it on '
        "only the one element that represents the current item; other values (step, location, date, "
        "time, true) exist for other kinds of sets.",
    ),
    (
        "main",
        ("How many <main> elements can a page have?", "What belongs inside <main>?"),
        "A page has one visible <main> element, holding the content unique to that page, not the "
        "header, navigation or footer repeated on every page. More <main> elements are allowed only if "
        "all but one are hidden with the hidden attribute, and <main> must not sit inside <article>, "
        "<aside>, <footer>, <header> or <nav>. A skip link that targets its id lets keyboard users "
        "jump straight to it.",
    ),
    (
        "section-vs-div",
        ("What is the difference between <section> and <div>?", "When should I use <section>?"),
        "<section> is a thematic grouping of content that normally starts with its own heading; given "
        "an accessible name, for example with aria-labelledby pointing at that heading, it is exposed "
        "as a region landmark. <div> carries no meaning at all and is only a hook for styling or "
        "scripts. If the content could stand on its own, such as a blog post or a comment, <article> "
        "fits better than <section>.",
    ),
    (
        "article",
        ("When is <article> the right element?", "What counts as an <article> in HTML?"),
        "Use <article> for a self-contained piece that would make sense on its own or when reused "
        "elsewhere: a blog post, a news story, a forum post, a product card or a comment. Articles can "
        "nest, such as comments inside a post, and each usually has its own heading and may have its "
        "own <header> and <footer>.",
    ),
    (
        "headings",
        ("How should I structure headings on a page?", "Is it OK to skip heading levels?"),
        "Use <h1> to <h6> to outline the page: usually one <h1> for the page's main topic, <h2> for "
        "its major sections, <h3> for subsections and so on, without skipping levels on the way down. "
        "Screen reader users often move through a page by its headings, so choose the level by "
        "structure, not by the visual size you want; change the size with CSS.",
    ),
    (
        "caption",
        ("Why should a table have a <caption>?", "Where does a table's <caption> go?"),
        "<caption> is the table's title. It must be the first child of <table>, is shown above the "
        "table by default, and becomes the table's accessible name, so screen reader users hear what "
        "the table is about before moving through its cells. A heading placed before the table is not "
        "tied to it in the same way.",
    ),
    (
        "layout-tables",
        ("Can I use tables for page layout?", "Is it fine to lay out a page with <table>?"),
        "No. Tables are for tabular data: rows and columns of related values. A layout table makes "
        "screen readers announce rows, columns and cell counts that mean nothing, and it resists "
        "responsive design. Use CSS grid or flexbox for layout; if legacy markup must keep a layout "
        'table, add role="presentation" to the <table> to remove its table semantics.',
    ),
    (
        "input-email",
        ('Why use type="email" instead of type="text"?', "What does an email input give me?"),
        'type="email" tells the browser the field holds an email address: it checks the format '
        "before submitting (along with constraints such as required), shows a keyboard with an @ key "
        'on touch devices, and helps autofill, especially with autocomplete="email". It is only a '
        "client-side check; the server must still validate the value.",
    ),
    (
        "required",
        ("How do I mark a form field as required accessibly?", "What does the required attribute do?"),
        "Add the required attribute to the control: the browser then blocks submission while the field "
        "is empty and exposes it as required to assistive technology. Also show the requirement in the "
        'visible label, for example "Email (required)" or an asterisk explained at the top of the '
        "form, so users know before they submit.",
    ),
    (
        "aria-describedby",
        ("What does aria-describedby do on an input?", "How do I attach a hint text to a field?"),
        "aria-describedby takes the id (or several space-separated ids) of elements whose text becomes "
        "the control's accessible description. Screen readers read it after the control's name, which "
        "suits hints such as password rules or error messages. It adds to the label; it does not "
        "replace it.",
    ),
    (
        "placeholder",
        ("Can a placeholder replace a label?", "Is placeholder text enough to name a field?"),
        "No. The placeholder disappears as soon as the user types, is often low in contrast, and is "
        "not reliably announced as the field's name. Give every control a visible <label>, and use "
        "placeholder, if at all, for a short example of the expected format.",
    ),
    (
        "live-region",
        ("How do I announce a form status message to screen reader users?", 'What does role="status" do?'),
        'Put the message in a live region, such as an element with role="status" (which implies '
        'aria-live="polite"), that is already in the page before the message is inserted. When its '
        'text changes, screen readers announce it without moving focus. Keep role="alert", which '
        "interrupts the user, for urgent errors.",
    ),
    (
        "lang",
        ("Why set the lang attribute on <html>?", 'What does <html lang="en"> change?'),
        "lang declares the language of the page. Screen readers choose the right pronunciation from "
        "it, browsers use it for hyphenation, spell checking and translation offers, and search "
        "engines use it too. Mark a passage in another language with lang on its enclosing element, "
        'such as <span lang="fr">.',
    ),
    (
        "details",
        ("What do <details> and <summary> do?", "How do I make a collapsible section without JavaScript?"),
        "<details> is a disclosure widget, closed by default; its first child <summary> is the visible "
        "toggle. Clicking the summary, or pressing Enter or Space on it, opens and closes the rest of "
        "the content without any JavaScript, and the browser exposes the expanded state to assistive "
        "technology. Add the open attribute to start it expanded.",
    ),
    (
        "dialog",
        ("How should I build a modal dialog in HTML?", "What does dialog.showModal() do?"),
        "Use the <dialog> element and open it with its showModal() method: the browser shows it in the "
        "top layer, makes the rest of the page inert, moves focus into the dialog and closes it on "
        "Escape. Give it an accessible name with aria-labelledby pointing at its heading. A <form "
        'method="dialog"> inside closes the dialog when submitted, and the submit button\'s value '
        "becomes the dialog's returnValue.",
    ),
    (
        "aria-expanded",
        ("When do I use aria-expanded?", "Where does aria-expanded go on a menu toggle?"),
        "Put aria-expanded on the control that shows and hides another element, such as a menu button, "
        'and keep it in sync: "true" while the controlled content is visible, "false" while it is '
        "hidden. Point aria-controls at the content's id. The attribute belongs on the button, not on "
        "the content it shows.",
    ),
    (
        "skip-link",
        ("What is a skip link?", "How do I let keyboard users bypass the navigation?"),
        'A skip link is a link at the very start of the page, such as <a href="#main">Skip to main '
        "content</a>, that jumps past the repeated header and navigation to the main content. Keyboard "
        "users reach it with their first Tab press. It is often hidden visually until it is focused, "
        "but it must become visible when it has focus.",
    ),
    (
        "figure",
        ("When should I use <figure> and <figcaption>?", "Does a <figcaption> replace alt text?"),
        "<figure> wraps self-contained content referred to from the main text, such as an image, "
        "chart, code listing or quotation, and <figcaption>, its first or last child, captions it and "
        "gives the figure its accessible name. A figcaption does not replace an image's alt text: alt "
        "describes the image for those who cannot see it, while the caption adds context that every "
        "reader sees.",
    ),
    (
        "time",
        ("What is the <time> element for?", "How do I mark up a date so machines can read it?"),
        "<time> marks a date, a time or a duration. Its datetime attribute holds a machine-readable "
        'value, such as datetime="2024-03-18", while the element\'s text stays friendly for people '
        '("March 18, 2024"), so browsers, search engines and other tools can read the exact date.',
    ),
]


# ---------------------------------------------------------------- generating


def write_pages(html_dir: Path | str) -> str:
    """Write the pages and their images into ``html_dir``; return a short content hash (the
    ``commit`` of the examples)."""
    html_dir = Path(html_dir)
    h = hashlib.sha256()
    for rel, text in sorted({**PAGES, **ASSETS}.items()):
        fileio.write_text(html_dir / rel, text)
        h.update(rel.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:12]


def _root_label(html_dir: Path) -> str:
    try:
        return Path(os.path.relpath(html_dir.resolve(), Path.cwd().resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return html_dir.resolve().as_posix()


def _check_grounded(html_dir: Path, pattern: str, path: str) -> None:
    lines = (html_dir / path).read_text(encoding="utf-8").splitlines()
    if not any(re.search(pattern, line) for line in lines):
        raise AssertionError(f"grep pattern {pattern!r} matches no line of {path}")


def _limit(option: str, n: int, pool: list) -> None:
    if n > len(pool):
        raise UserError(
            f"{option}: at most {len(pool)} (there are {len(pool)} distinct HTML examples of this kind)"
        )


def build_examples(
    html_dir: Path | str,
    n_grep: int = 9,
    n_read: int = 5,
    n_direct: int = 16,
    seed: int = 0,
    fmt: str = "tools",
    commit: str = "",
) -> list[dict]:
    """The example records over pages already written to ``html_dir``, in a seeded order."""
    if fmt not in records.FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(records.FORMATS)}")
    _limit("--grep", n_grep, GREP_POOL)
    _limit("--read", n_read, READ_POOL)
    _limit("--direct", n_direct, DIRECT_POOL)
    html_dir = Path(html_dir)
    rng = random.Random(seed)
    base = {
        "source": "html",
        "repo": "html",
        "root": _root_label(html_dir),
        "commit": commit,
        "generator": GENERATOR,
    }
    out = []
    for pattern, search, path, symbol, questions in rng.sample(GREP_POOL, n_grep):
        _check_grounded(html_dir, pattern, path)
        meta = {
            "category": "grep",
            "origin": "real",
            **base,
            "path": path,
            "symbol": symbol,
            "kind": "element",
        }
        args = {"pattern": pattern} if search == "." else {"pattern": pattern, "path": search}
        out.append(records.tool_call_record(rng.choice(questions), "grep", args, meta, fmt))
    for path, questions in rng.sample(READ_POOL, n_read):
        if not (html_dir / path).is_file():
            raise AssertionError(f"read path {path} does not exist in {html_dir}")
        meta = {"category": "read", "origin": "real", **base, "path": path, "symbol": path, "kind": "page"}
        out.append(records.tool_call_record(rng.choice(questions), "read", {"path": path}, meta, fmt))
    for topic, questions, answer in rng.sample(DIRECT_POOL, n_direct):
        meta = {"category": "direct", "origin": "synthetic", **base, "symbol": topic, "kind": "concept"}
        out.append(records.direct_record(rng.choice(questions), answer, meta, fmt))
    rng.shuffle(out)
    return out


def generate_html_examples(
    out: Path | str = "data/html_examples/training_examples.jsonl",
    html_dir: Path | str = "data/html",
    n_grep: int = 9,
    n_read: int = 5,
    n_direct: int = 16,
    seed: int = 0,
    fmt: str = "tools",
) -> dict[str, int]:
    """Write the pages to ``html_dir`` and the examples to ``out``; return counts by category."""
    for option, n, pool in (
        ("--grep", n_grep, GREP_POOL),
        ("--read", n_read, READ_POOL),
        ("--direct", n_direct, DIRECT_POOL),
    ):
        _limit(option, n, pool)  # before writing anything
    commit = write_pages(html_dir)
    recs = build_examples(html_dir, n_grep, n_read, n_direct, seed=seed, fmt=fmt, commit=commit)
    for r in recs:
        problems = records.validate_record(r)
        if problems:
            raise AssertionError(f"generated an invalid record: {problems}")
    fileio.write_jsonl(out, recs)
    return {"grep": n_grep, "read": n_read, "direct": n_direct}

"""A small byte-level BPE tokenizer trained offline on web-agent text, with a ChatML chat template.

The tiny default policy (see `agentrl.policy.model`) needs a tokenizer that exists without any download.
`train_tokenizer` builds one with the `tokenizers` library (byte-level BPE: every byte string is encodable,
decoding is exact) and wraps it in `transformers.PreTrainedTokenizerFast` so it saves with
`save_pretrained` and loads back with `AutoTokenizer.from_pretrained(dir)` with identical ids.

>>> tok = train_tokenizer(default_corpus(n_docs=200), vocab_size=512)
>>> tok.decode(tok.encode('click(e12)'))
'click(e12)'
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from agentrl.policy.prompt import DEFAULT_SYSTEM_PROMPT, format_user_message

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)  # ids 0, 1, 2 in a trained tokenizer

# ChatML, as used by Qwen2.x: <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# ---------------------------------------------------------------- synthetic corpus
_WORDS = (
    "Home About Contact Reports Settings Profile Account Dashboard Search Submit Cancel Save Delete Edit "
    "Next Previous Back Continue Sign in Sign out Log in Register Username Password Email Name First Last "
    "Address City State Zip Country Phone Message Subject Title Description Date Time Amount Price Total "
    "Quantity Order Orders Invoice Invoices Customer Customers Product Products Cart Checkout Payment "
    "Shipping Billing Status Pending Approved Rejected Open Closed New Upload Download Export Import File "
    "Files Folder Documents Report Monthly Weekly Annual Summary Details Overview Help Support FAQ Terms "
    "Privacy Policy Blue Red Green Yellow Black White Small Medium Large January February March April May "
    "June July August September October November December Monday Friday Yes No OK Apply Filter Sort Reset "
    "Close Menu Main Navigation Footer Header Welcome Hello Notifications Inbox Compose Reply Forward "
    "Archive Team Members Admin User Users Role Permissions Project Projects Task Tasks Priority High Low "
    "Comment Comments Add Remove Update Create View Show More Less All None Select Choose Option Language "
    "English Newsletter Subscribe Remember me Forgot password Accept Decline Confirm Alice Bob Carol Dave "
    "Acme Widget Gadget Laptop Phone Chair Desk Lamp Book Ticket Flight Hotel Booking Calendar Event Notes"
).split()
_ROLES = tuple(
    (
        "link button heading textbox checkbox combobox cell row columnheader listitem list navigation main "
        "form table paragraph img radio option searchbox tab tablist dialog menuitem banner contentinfo "
        "region spinbutton"
    ).split()
)
_KEYS = ("Enter", "Tab", "Escape", "Backspace", "ArrowDown", "ArrowUp", "Control+a", "PageDown")
_PATHS = tuple(
    (
        "/ /login /reports /reports/2024 /settings /orders?page=2 /files/report.csv /search?q=widget "
        "/profile /cart /admin/users /tasks/17"
    ).split()
)
_SYLLABLES = tuple(
    (
        "ka lo ri zen mar tu vi sol den qu ax bel cor dra el fin gar hol is jun kel lum nor ost pra sen "
        "tor ul ver wyn"
    ).split()
)


def _word(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.7:
        return rng.choice(_WORDS)
    if r < 0.85:  # made-up names: products, people, companies
        return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    if r < 0.9:
        return f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
    if r < 0.95:
        return f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return str(rng.randint(0, 5000))


def _phrase(rng: random.Random, lo: int = 1, hi: int = 3) -> str:
    return " ".join(_word(rng) for _ in range(rng.randint(lo, hi)))


def synthetic_observation(rng: random.Random, n_lines: int = 12) -> tuple[str, list[str]]:
    """A random accessibility-tree snapshot and the element ids (refs) it contains."""
    lines = ["- generic [ref=e1]:"]
    refs = ["e1"]
    next_ref = 2
    for _ in range(n_lines):
        depth = rng.randint(1, 3)
        role = rng.choice(_ROLES)
        ref = f"e{next_ref}"
        next_ref += rng.randint(1, 3)
        refs.append(ref)
        attrs = ""
        if role == "heading":
            attrs = f" [level={rng.randint(1, 4)}]"
        elif role in ("checkbox", "radio"):
            attrs = rng.choice(("", " [checked]"))
        elif role == "option":
            attrs = rng.choice(("", " [selected]"))
        elif role == "textbox" and rng.random() < 0.3:
            attrs = " [disabled]"
        line = f'{"  " * depth}- {role} "{_phrase(rng)}"{attrs} [ref={ref}]'
        if role in ("link",) and rng.random() < 0.5:
            line += f":\n{'  ' * (depth + 1)}- /url: {rng.choice(_PATHS)}"
        elif role in ("textbox", "searchbox") and rng.random() < 0.4:
            line += f": {_phrase(rng, 1, 2)}"
        elif role in ("row", "list", "navigation", "form", "table", "combobox"):
            line += ":"
        elif rng.random() < 0.15:
            line = f"{'  ' * depth}- text: {_phrase(rng, 2, 6)}"
        lines.append(line)
    return "\n".join(lines), refs


def synthetic_action(rng: random.Random, refs: list[str]) -> str:
    """One random action string of any kind of the action language."""
    ref = rng.choice(refs)
    kind = rng.randrange(9)
    if kind <= 2:
        return f"click({ref})"
    if kind == 3:
        return f'fill({ref}, "{_phrase(rng, 1, 2)}")'
    if kind == 4:
        return f'select({ref}, "{rng.choice(_WORDS)}")'
    if kind == 5:
        return f'press("{rng.choice(_KEYS)}")'
    if kind == 6:
        return f'scroll("{rng.choice(("down", "up"))}")'
    if kind == 7:
        return f'goto("http://127.0.0.1:8000{rng.choice(_PATHS)}")'
    return rng.choice(("back()", "wait()", f'done("{_phrase(rng, 1, 3)}")'))


def default_corpus(n_docs: int = 1500, seed: int = 0) -> list[str]:
    """Representative offline training text: observations, actions of every kind and ChatML turns.

    Deterministic for a given (n_docs, seed). About 1 MB for the default size.
    """
    rng = random.Random(seed)
    docs: list[str] = []
    for i in range(n_docs):
        obs, refs = synthetic_observation(rng, n_lines=rng.randint(4, 24))
        actions = [synthetic_action(rng, refs) for _ in range(rng.randint(1, 5))]
        verb = rng.choice(("Open", "Find", "Download", "Fill in", "Submit", "Sort"))
        goal = f"{verb} the {_phrase(rng, 1, 3)}"
        user = format_user_message(goal, actions[:-1], obs, first_step=rng.randint(1, 6))
        if i % 4 == 0:
            docs.append(obs)
            docs.append("\n".join(actions))
        else:
            docs.append(
                f"{IM_START}system\n{DEFAULT_SYSTEM_PROMPT}{IM_END}\n{IM_START}user\n{user}{IM_END}\n"
                f"{IM_START}assistant\n{actions[-1]}{IM_END}\n"
            )
    return docs


# ---------------------------------------------------------------- training
def _batches(corpus: Iterable[str], size: int = 256) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in corpus:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(
    corpus: Iterable[str] | None = None, vocab_size: int = 2048, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus` (default: `default_corpus()`) and wrap it for transformers.

    Special tokens: `<|endoftext|>` (id 0, also pad), `<|im_start|>` (1), `<|im_end|>` (2, the eos: it ends an
    assistant turn). The chat template is ChatML with `add_generation_prompt` support. No BOS is added.
    """
    if corpus is None:
        corpus = default_corpus()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    bpe.train_from_iterator(_batches(corpus), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok

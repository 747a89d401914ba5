"""The by-hand scoring text of the ho-t3.787 search (README, "Scoring text"): GSM8K test (question +
worked answer), MMLU val (question + gold answer) and ARC-Easy/Challenge Dev (stem + gold choice),
shuffled with seed 0, one document (no separators). Usage: python3 heldout_text.py SHARED/data OUT.txt"""
import csv, glob, json, random, sys

data, out = sys.argv[1], sys.argv[2]
docs = []
for line in open(f"{data}/gsm8k/test.jsonl"):
    d = json.loads(line)
    docs.append(d["question"] + "\n" + d["answer"].split("####")[0].strip())
for f in sorted(glob.glob(f"{data}/mmlu/val/*.csv")):
    for row in csv.reader(open(f)):
        q, a, b, c, d, ans = row[:6]
        docs.append(f"{q}\nAnswer: {dict(A=a, B=b, C=c, D=d)[ans]}")
for f in [f"{data}/arc_easy/ARC-Easy-Dev.jsonl", f"{data}/arc_challenge/ARC-Challenge-Dev.jsonl"]:
    for line in open(f):
        d = json.loads(line)
        ch = {c["label"]: c["text"] for c in d["question"]["choices"]}
        docs.append(d["question"]["stem"] + " " + ch.get(d["answerKey"], ""))
random.Random(0).shuffle(docs)
open(out, "w").write("\n\n".join(docs) + "\n")

# sass_loop.py file.sass kernel_regex: a kernel's main loop (the longest backward branch) by instruction class.
# file.sass: `cuobjdump -sass x.cubin` (cuobjdump from the nvidia-cuda-cuobjdump wheel when the toolkit lacks it)
import re, sys, collections
txt = open(sys.argv[1]).read()
for f in re.split(r'\n\s*Function : ', txt)[1:]:
    name = f.split('\n', 1)[0]
    if not re.search(sys.argv[2], name): continue
    ins = re.findall(r'/\*([0-9a-f]{4})\*/\s+((?:@!?U?P\w+\s+)?[A-Z][A-Z0-9_.]+)([^;]*);', f)
    ins = [(int(a, 16), op, rest) for a, op, rest in ins]
    # back edges: BRA to a lower address; take the largest span
    best = None
    for a, op, rest in ins:
        if op.endswith('BRA'):
            m = re.search(r'0x([0-9a-f]+)', rest)
            if m and int(m.group(1), 16) < a:
                span = a - int(m.group(1), 16)
                if not best or span > best[1] - best[0]: best = (int(m.group(1), 16), a)
    body = [op.split()[-1].split('.')[0] for a, op, rest in ins if best[0] <= a <= best[1]]
    pred = sum(1 for a, op, rest in ins if best[0] <= a <= best[1] and op.startswith('@'))
    c = collections.Counter(body)
    print(name.strip()[40:110], 'loop', hex(best[0]), hex(best[1]), 'instr', len(body), 'predicated', pred)
    print('   ', ' '.join(f"{k}:{v}" for k, v in c.most_common(30)))

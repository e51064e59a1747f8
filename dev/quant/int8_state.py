"""Prototype (numpy, not part of the build): the accuracy cost of an int8 decode state, to decide
whether gdn2 should offer one next to the bf16 pool (GDN2_STATE_BF16, docs/ALGORITHM.md §7).

One head, K = V = 128, q/k L2-normalised, b, w = sigmoid(N(0,1)), v ~ N(0,1); the state is kept as
int8 per key row with one fp32 scale per row (absmax / 127), dequantized before each step, updated in
fp32 and requantized after it (round to nearest, or stochastic rounding 'i8sr'); o is compared with a
float64 run. Gates: the official layer's initialisation ('official') and a slow decay (A = 0.1,
dt_bias = -6: ~0.9998 per token, 'slow'). Prints the relative RMSE of o over the last 10% of the
steps and over all steps.   python3 dev/quant/int8_state.py [steps]"""
import numpy as np, sys
rng=np.random.default_rng(1)
K=V=128; N=int(sys.argv[1]) if len(sys.argv)>1 else 3000
def run(mode, gate):
    S64=np.zeros((K,V)); S=np.zeros((K,V),np.float32); Sq=np.zeros((K,V),np.int8); sc=np.zeros(K,np.float32)
    errs=[]; ref=[]
    r2=np.random.default_rng(5)
    A=np.exp(r2.uniform(np.log(1),np.log(16))) if gate=='official' else 0.1
    dtb=np.log(np.expm1(np.exp(r2.uniform(np.log(1e-3),np.log(1e-1),K)))) if gate=='official' else -6*np.ones(K)
    for t in range(N):
        q=r2.standard_normal(K);k=r2.standard_normal(K);q/=np.linalg.norm(q);k/=np.linalg.norm(k)
        f=r2.standard_normal(K) if gate=='official' else r2.standard_normal(K)*0.0
        g=-A*np.log1p(np.exp(f+dtb))
        b=1/(1+np.exp(-r2.standard_normal(K)));w=1/(1+np.exp(-r2.standard_normal(V)));v=r2.standard_normal(V)
        def step(S):
            S=S*np.exp(g)[:,None]; r=(b*k)@S; S=S+np.outer(k,w*v-r); return S, S.T@q
        S64,o64=step(S64)
        if mode=='i8':
            Sf=Sq.astype(np.float32)*sc[:,None]
            Sf,o=step(Sf)
            m=np.abs(Sf).max(1); sc=(m/127).astype(np.float32); sc[sc==0]=1
            Sq=np.clip(np.round(Sf/sc[:,None]),-127,127).astype(np.int8)
        elif mode=='i8sr':
            Sf=Sq.astype(np.float32)*sc[:,None]
            Sf,o=step(Sf)
            m=np.abs(Sf).max(1); sc=(m/127).astype(np.float32); sc[sc==0]=1
            x=Sf/sc[:,None]; fl=np.floor(x); Sq=np.clip(fl+(r2.random(x.shape)<(x-fl)),-127,127).astype(np.int8)
        else:
            S,o=step(S.astype(np.float32))
        errs.append(np.sum((o-o64)**2)); ref.append(np.sum(o64**2))
    e=np.array(errs); rr=np.array(ref); n=len(e)
    return np.sqrt(e[-n//10:].sum()/rr[-n//10:].sum()), np.sqrt(e.sum()/rr.sum())
for gate in ['official','slow']:
    for mode in ['f32','i8','i8sr']:
        print(gate, mode, ['%.3e'%x for x in run(mode,gate)])

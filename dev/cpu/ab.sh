#!/bin/sh
# A/B of two prof builds on a shared machine: alternate them N times, keep each one's best CPU ms.
#   sh dev/cpu/ab.sh build/prof0 build/prof "fwd 4 1024 4 64 64 5 1" 6
A=$1; B=$2; ARGS=$3; N=${4:-6}
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Cooperlake} NOBLK=1
for i in $(seq $N); do
  $A $ARGS | awk -v t=A '/best/{for(i=1;i<=NF;i++) if($(i+1)=="ms" && $(i+2)=="cpu") print t, $1, $i}'
  $B $ARGS | awk -v t=B '/best/{for(i=1;i<=NF;i++) if($(i+1)=="ms" && $(i+2)=="cpu") print t, $1, $i}'
done | sort -k1,1 -k2,2 -k3,3n | awk '{k=$1" "$2; if(!(k in m)) {m[k]=$3; print k, "best cpu ms", $3}}'
echo "load $(cat /proc/loadavg)"

package proxy

const bigSize = 100 << 20

var bigBody = make([]byte, bigSize)

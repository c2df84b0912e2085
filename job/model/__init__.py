"""The network and everything Ray-free that runs it: the LSTM encoder-decoder (seq2seq), greedy
and beam search (search), sampling (sampling), forced-decoding scores (forced), token-budget
batches of encoded ids (batching) and the precision policy (device). Training and inference both
build on these.

May import: job.corpus (the vocabulary) and the shared top-level modules. Nothing above.
"""

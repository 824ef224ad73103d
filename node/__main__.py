from node.process.cli import main

main()

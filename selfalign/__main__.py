from selfalign.cli import main

main()
